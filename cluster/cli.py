"""The `phifleet` command line. Flags map onto the engine's pydantic config; nothing is configured twice."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

DESCRIPTION = """\
phifleet runs Microsoft Phi-4 at scale: offline batch inference on Ray Data and OpenAI-compatible
serving on Ray Serve, locally on an embedded Ray or on Kubernetes (KubeRay).

Every command takes --model: a local model directory, a Hugging Face id already in the local
cache, or 'phi4-tiny' (the default) -- a toy model with Phi-4's architecture and chat format,
built offline on first use in about a minute.
"""


def _engine_args(p: argparse.ArgumentParser) -> None:
    from phifleet.engine.config import EngineConfig

    fields = EngineConfig.model_fields
    g = p.add_argument_group("engine")
    g.add_argument("--model", default=fields["model"].default, help=fields["model"].description)
    g.add_argument("--dtype", default="auto", help=fields["dtype"].description)
    g.add_argument("--device", default="auto", help=fields["device"].description)
    g.add_argument("--backend", default="deepspeed", help=fields["backend"].description)
    g.add_argument("--batching", default="auto", help=fields["batching"].description)
    g.add_argument("--tensor-parallel-size", type=int, default=1, help=fields["tensor_parallel_size"].description)
    g.add_argument("--max-model-len", type=int, default=None, help=fields["max_model_len"].description)
    g.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help=fields["max_batch_size"].description,
    )


def _engine_config(args: argparse.Namespace):  # -> EngineConfig
    from phifleet.engine.config import EngineConfig

    return EngineConfig(
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        backend=args.backend,
        batching=args.batching,
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        max_batch_size=args.max_batch_size,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phifleet", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = sub.add_parser("model", help="build, inspect and evaluate models")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="MODEL_COMMAND")
    build = msub.add_parser(
        "build-tiny",
        help="(re)build the phi4-tiny default model (about a minute on CPU)",
        description="Build phi4-tiny deterministically and train it on generated reviews.",
    )
    build.add_argument(
        "--output",
        type=Path,
        default=None,
        help="directory to write (default: the phifleet cache, $PHIFLEET_HOME)",
    )
    info = msub.add_parser("info", help="show a model's architecture, size, tokenizer and context window")
    info.add_argument("path", nargs="?", default="phi4-tiny", help="model directory, cached HF id or phi4-tiny")
    ev = msub.add_parser(
        "eval",
        help="label-score a labelled JSONL file and report accuracy",
        description="Classify each row's text by label scoring and compare with its 'label'.",
    )
    ev.add_argument("input", type=Path, help="JSONL with 'text' and 'label' per line")
    ev.add_argument("--labels", default=None, help="comma-separated candidate labels (default: those in the file)")
    ev.add_argument("--instruction", default=None, help="system instruction; {labels} is replaced by the labels")
    _engine_args(ev)

    gen = sub.add_parser(
        "generate-one",
        help="generate one chat completion locally (an engine smoke test)",
        description="Render PROMPT as a user turn with Phi-4's chat template and generate.",
    )
    gen.add_argument("prompt", help="the user message")
    _sampling_args(gen, max_tokens=64)
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    _engine_args(gen)

    label = sub.add_parser(
        "label",
        help="label every row of a dataset (Ray Data; label scoring, one label per row)",
        description="Classify each row's text into one of --labels by label scoring, on a pool of replicas.",
    )
    label.add_argument("--labels", required=True, help="comma-separated candidate labels")
    label.add_argument("--instruction", default=None, help="system instruction; {labels} becomes the label list")
    _job_args(label)

    generate = sub.add_parser(
        "generate",
        help="generate a completion for every row of a dataset (Ray Data)",
        description="Fill --prompt-template from each row and generate, on a pool of replicas.",
    )
    generate.add_argument("--prompt-template", required=True, help="user message; {column} takes the row's value")
    _sampling_args(generate, max_tokens=128)
    _job_args(generate)

    srv = sub.add_parser(
        "serve",
        help="run the OpenAI-compatible endpoint locally (Ray Serve on an embedded Ray; Ctrl-C stops it)",
        description="Serve /v1/models, /v1/chat/completions, /v1/completions and /v1/classify.",
    )
    srv.add_argument("--config", type=Path, default=None, help="serve config, YAML or JSON (serve.config.ServeConfig)")
    srv.add_argument("--model", default=None, help="override the config's engine.model")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")

    batch = sub.add_parser(
        "batch",
        help="run an OpenAI Batch API input file (JSONL of /v1/chat/completions or /v1/completions requests)",
        description="Writes OUT/output.jsonl and OUT/errors.jsonl in the OpenAI Batch output format.",
    )
    _job_args(batch)

    from phifleet.cluster import cluster_cli

    cluster_cli.add_parser(sub)
    return parser


def _sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (the default) = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (per row: seed + a hash of the row id)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def _job_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by label/generate/batch: they fill jobs.config.JobConfig, like a --config file would."""
    p.add_argument("input", help="file, directory, glob or fsspec URL (JSONL, Parquet or CSV)")
    p.add_argument("--output", required=True, help="output directory; re-running with it resumes the job")
    p.add_argument("--format", default="parquet", help="result format: parquet or jsonl")
    p.add_argument("--input-format", default="auto", help="auto (by extension), jsonl, parquet or csv")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id", help="unique id column; rows without it get <file>:<line>")
    pool = p.add_argument_group("replica pool")
    pool.add_argument("--replicas", type=int, default=None, help="fixed pool size (sets min and max)")
    pool.add_argument("--min-replicas", type=int, default=1)
    pool.add_argument("--max-replicas", type=int, default=None)
    pool.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica")
    pool.add_argument("--num-cpus", type=float, default=0.5, help="CPUs per replica (fractional locally)")
    pool.add_argument("--batch-size", type=int, default=64, help="rows per replica call")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    p.add_argument("--dump-config", action="store_true", help="print the job config as YAML and exit")
    _engine_args(p)


def job_config(args: argparse.Namespace):  # -> jobs.config.JobConfig
    from phifleet.jobs.config import JobConfig

    if args.command == "label":
        task = {"kind": "label", "labels": args.labels.split(","), "instruction": args.instruction}
    elif args.command == "generate":
        task = {
            "kind": "generate",
            "prompt_template": args.prompt_template,
            "system": args.system,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "seed": args.seed,
            "stop": args.stop,
        }
    else:
        task = {"kind": "batch"}
    min_r = args.replicas or args.min_replicas
    return JobConfig.model_validate(
        {
            "input": {
                "path": args.input,
                "format": args.input_format,
                "text_column": args.text_column,
                "id_column": args.id_column or None,
            },
            "output": {"path": args.output, "format": args.format},
            "task": task,
            "engine": _engine_config(args).model_dump(exclude_defaults=True),
            "pool": {
                "min_replicas": min_r,
                "max_replicas": args.replicas or args.max_replicas or min_r,
                "num_gpus": args.num_gpus,
                "num_cpus": args.num_cpus,
                "batch_size": args.batch_size,
            },
            "address": args.address,
        }
    )


def cmd_job(args: argparse.Namespace) -> int:
    import yaml

    config = job_config(args)
    if args.dump_config:
        data = config.model_dump(mode="json", exclude_defaults=True)
        data["task"]["kind"] = config.task.kind  # the discriminator, default or not
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    from phifleet.jobs.pipeline import run_job, summary_text

    manifest = run_job(config)
    print(summary_text(manifest))
    return 0 if manifest["counts"]["accounted"] else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    import yaml
    from phifleet.jobs.pipeline import init_ray
    from phifleet.serve.app import build_app, served_name
    from phifleet.serve.config import SERVE_RAY_ENV, ServeConfig
    from ray import serve

    data = yaml.safe_load(args.config.read_text()) if args.config else {}
    if args.model:
        data.setdefault("engine", {})["model"] = args.model
    config = ServeConfig.model_validate(data or {})
    for key, value in SERVE_RAY_ENV.items():  # reaches the embedded Ray's processes; a cluster has its own
        os.environ.setdefault(key, value)
    init_ray(args.address)
    url, name = f"http://{args.host}:{args.port}", served_name(config)
    try:  # Ctrl-C at any point, even while deploying, shuts down cleanly
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(config.model_dump(mode="json")), name="phifleet", route_prefix="/")
        print(f"phifleet is serving {name} at {url}/v1 (Ctrl-C stops it)")
        print(
            f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' -H 'Authorization: Bearer $KEY' \\"
        )
        print(f'    -d \'{{"model": "{name}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'')
        print(
            f"  python -c \"import openai; c = openai.OpenAI(base_url='{url}/v1', api_key='KEY'); "
            f"print(c.chat.completions.create(model='{name}', messages=[{{'role': 'user', 'content': 'Hi'}}]))\"",
            flush=True,
        )
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("shutting down", flush=True)
    finally:
        serve.shutdown()
    return 0


def cmd_build_tiny(args: argparse.Namespace) -> int:
    from phifleet.engine.tiny.build import build_tiny_model, default_tiny_dir

    path = args.output or default_tiny_dir()
    print(f"building phi4-tiny into {path} ...", flush=True)
    meta = build_tiny_model(path)
    print(json.dumps(meta, indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from phifleet.engine.model_info import model_info

    print(json.dumps(model_info(args.path), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from phifleet.engine import Engine
    from phifleet.engine.prompts import classification_prompt

    rows = [json.loads(line) for line in args.input.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
            raise SystemExit(f"{args.input}:{i}: each line needs string fields 'text' and 'label'")
    labels = args.labels.split(",") if args.labels else sorted({r["label"] for r in rows})
    engine = Engine(_engine_config(args))
    started = time.perf_counter()
    scores = engine.score_labels([classification_prompt(r["text"], labels, args.instruction) for r in rows], labels)
    elapsed = time.perf_counter() - started
    correct = sum(s.label == r["label"] for s, r in zip(scores, rows, strict=True))
    confusion = Counter((r["label"], s.label) for s, r in zip(scores, rows, strict=True))
    print(f"model {engine.model_name} ({engine.model_dir}), backend {engine.config.backend}")
    print(f"rows {len(rows)}  accuracy {correct / len(rows):.1%}  {len(rows) / elapsed:.0f} rows/s")
    print("confusion (true -> predicted):")
    for (truth, pred), n in sorted(confusion.items()):
        print(f"  {truth:>10} -> {pred:<10} {n}")
    return 0


def cmd_generate_one(args: argparse.Namespace) -> int:
    from phifleet.engine import Engine, GenerationRequest, SamplingParams

    engine = Engine(_engine_config(args))
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    request = GenerationRequest(engine.render_chat(messages), params)
    started = time.perf_counter()
    if args.stream:
        for delta in engine.stream(request):
            print(delta.text, end="", flush=True)
            if delta.finish_reason:
                print(
                    f"\n[finish={delta.finish_reason} prompt_tokens={delta.prompt_tokens} "
                    f"completion_tokens={delta.completion_tokens}]"
                )
    else:
        result = engine.generate([request])[0]
        print(result.text)
        print(
            f"[finish={result.finish_reason} prompt_tokens={result.prompt_tokens} "
            f"completion_tokens={result.completion_tokens} {time.perf_counter() - started:.2f}s]"
        )
    engine.close()
    return 0


COMMANDS = {
    ("model", "build-tiny"): cmd_build_tiny,
    ("model", "info"): cmd_info,
    ("model", "eval"): cmd_eval,
    ("generate-one", None): cmd_generate_one,
    ("label", None): cmd_job,
    ("generate", None): cmd_job,
    ("batch", None): cmd_job,
    ("serve", None): cmd_serve,
}


def _handler(args: argparse.Namespace):
    if args.command == "cluster":
        from phifleet.cluster import cluster_cli

        return cluster_cli.COMMANDS[args.cluster_command]
    return COMMANDS[(args.command, getattr(args, "model_command", None))]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from phifleet.engine.errors import EngineError
    from phifleet.jobs.errors import JobInputError

    handler = _handler(args)
    try:
        return handler(args)
    except ValidationError as exc:
        print(f"phifleet: invalid configuration: {_validation_message(exc)}", file=sys.stderr)
    except EngineError as exc:
        where = f" ({exc.param})" if exc.param else ""
        print(f"phifleet: error{where}: {exc.message}", file=sys.stderr)
    except JobInputError as exc:
        print(f"phifleet: error: {exc}", file=sys.stderr)
    return 2


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())


if __name__ == "__main__":
    sys.exit(main())
