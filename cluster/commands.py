"""The CLI's commands that run a job or the engine: label/generate/batch, generate-one and `model ...`.

Each turns its parsed flags into the config models (ConfigFlags.values → model_validate) and runs them; none
restates a default.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

from phifleet.cluster.flags import ConfigError, ConfigFlags, widen_max_to_min


def job_config(args: argparse.Namespace) -> Any:  # -> jobs.config.JobConfig (imported late: keeps --help fast)
    from phifleet.jobs.config import JobConfig

    flags = ConfigFlags.of(args)
    data = flags.values(args)
    pool = data.setdefault("pool", {})
    if args.replicas is not None:  # the one shorthand: a fixed-size pool
        if {"min_replicas", "max_replicas"} & pool.keys():
            raise ConfigError("--replicas sets both pool sizes: give it or --min-replicas/--max-replicas, not both")
        pool.update(min_replicas=args.replicas, max_replicas=args.replicas)
    widen_max_to_min(pool)
    return flags.validate(JobConfig, data)


def job(args: argparse.Namespace) -> int:
    """label/generate/batch: run the job on Ray Data (or print its config with --dump-config)."""
    import yaml

    config = job_config(args)
    if args.dump_config:
        data = config.model_dump(mode="json", exclude_defaults=True)
        data["task"]["kind"] = config.task.kind  # the discriminator, default or not
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    from phifleet.jobs.pipeline import run_job, summary_text
    from phifleet.jobs.stderr_filter import quiet_ray_core

    verbose = bool(getattr(args, "verbose", False))
    with quiet_ray_core(verbose):  # Ray's C++ core_worker notices only with -v (jobs/stderr_filter.py)
        manifest = run_job(config, verbose=verbose)
    print(summary_text(manifest))
    return 0 if manifest["counts"]["accounted"] else 1


def _engine_config(args: argparse.Namespace) -> Any:  # -> EngineConfig
    from phifleet.engine.config import EngineConfig

    flags = ConfigFlags.of(args)
    return flags.validate(EngineConfig, flags.values(args).get("engine", {}), ("engine",))


def build_tiny(args: argparse.Namespace) -> int:
    from phifleet.engine.tiny.build import build_tiny_model

    path = args.output
    print(f"building phi4-tiny into {path} ...", flush=True)
    meta = build_tiny_model(path)
    print(json.dumps(meta, indent=2))
    return 0


def info(args: argparse.Namespace) -> int:
    from phifleet.engine.model_info import model_info

    print(json.dumps(model_info(args.path), indent=2))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Label-score a labelled JSONL file: accuracy, speed and the confusion counts."""
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


def generate_one(args: argparse.Namespace) -> int:
    """One chat completion with a `generate` job's sampling flags: a smoke test of the engine."""
    from phifleet.engine import Engine, GenerationRequest, SamplingParams
    from phifleet.engine.chat_template import render_chat_prompt
    from phifleet.jobs.config import GenerateTask

    flags = ConfigFlags.of(args)
    task = flags.validate(
        GenerateTask, {**flags.values(args).get("task", {}), "prompt_template": args.prompt}, ("task",)
    )
    engine = Engine(_engine_config(args))
    messages = [{"role": "system", "content": task.system}] if task.system else []
    messages.append({"role": "user", "content": args.prompt})
    params = SamplingParams(**task.model_dump(include={"max_tokens", "temperature", "top_p", "top_k", "seed", "stop"}))
    request = GenerationRequest(render_chat_prompt(messages), params)  # the prompt is content, as a job row's
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
