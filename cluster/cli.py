"""The `phifleet` command line: the parser and the dispatch to each command.

Config flags are generated from the pydantic models (cluster/flags.py) — EngineConfig, JobConfig's sections and
task models, ServeConfig — so a knob's name, help, choices and default live on its field alone. The commands
themselves are in cluster/commands.py and cluster/local_serve.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from phifleet import __version__
from phifleet.cluster.flags import ConfigError, ConfigFlags

DESCRIPTION = """\
phifleet runs Microsoft Phi-4 at scale: offline batch inference on Ray Data and OpenAI-compatible
serving on Ray Serve, locally on an embedded Ray or on Kubernetes (KubeRay).

Commands that run a model take --model: a local model directory, a Hugging Face id already in the local
cache, or 'phi4-tiny' (the default) -- a toy model with Phi-4's architecture and chat format that
ships with phifleet (a few MB), so everything runs offline on a CPU.
"""

#: Flag names that differ from their field's name: ambiguous leaves (two `seed`s, two `format`s, two `path`s)
#: and the CLI's established names for a job's input and output.
FLAG_NAMES = {
    "engine.seed": "engine-seed",
    "input.path": "input",
    "input.format": "input-format",
    "output.path": "output",
    "output.format": "format",
}
POSITIONAL = {"input.path"}
VERBATIM_LISTS = {"task.stop"}  # stop strings may contain commas

Handler = Callable[[argparse.Namespace], int]


def config_flags(parser: argparse.ArgumentParser) -> ConfigFlags:
    return ConfigFlags(parser, names=FLAG_NAMES, positional=POSITIONAL, verbatim=VERBATIM_LISTS)


def _subparser(sub: argparse._SubParsersAction, name: str, handler: Handler, **kw: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, **kw)
    p.set_defaults(handler=handler)
    return p


def _model_commands(sub: argparse._SubParsersAction) -> None:
    from phifleet.cluster import commands
    from phifleet.engine.config import EngineConfig

    model = sub.add_parser("model", help="build, inspect and evaluate models")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="MODEL_COMMAND")
    build = _subparser(
        msub,
        "build-tiny",
        commands.build_tiny,
        help="build a copy of the phi4-tiny model from its builder (about 5 minutes on one CPU thread)",
        description=(
            "Build phi4-tiny from the builder (seeded, one thread) and train it on generated and hand-written "
            "reviews. The shipped copy is not touched: --model DIR uses the new one. A build on another CPU "
            "differs in its floats; the shipped weights are what behaves the same everywhere."
        ),
    )
    build.add_argument("--output", type=Path, required=True, help="directory to write the model into (replaced)")
    info = _subparser(
        msub, "info", commands.info, help="show a model's architecture, size, tokenizer and context window"
    )
    info.add_argument("path", nargs="?", default="phi4-tiny", help="model directory, cached HF id or phi4-tiny")
    ev = _subparser(
        msub,
        "eval",
        commands.evaluate,
        help="label-score a labelled JSONL file and report accuracy",
        description="Classify each row's text by label scoring and compare with its 'label'.",
    )
    ev.add_argument("input", type=Path, help="JSONL with 'text' and 'label' per line")
    ev.add_argument("--labels", default=None, help="comma-separated candidate labels (default: those in the file)")
    ev.add_argument("--instruction", default=None, help="system instruction; {labels} is replaced by the labels")
    config_flags(ev).add(EngineConfig, ("engine",))


def _generate_one(sub: argparse._SubParsersAction) -> None:
    from phifleet.cluster import commands
    from phifleet.engine.config import EngineConfig
    from phifleet.jobs.config import GenerateTask

    gen = _subparser(
        sub,
        "generate-one",
        commands.generate_one,
        help="generate one chat completion locally (an engine smoke test)",
        description="Render PROMPT as a user turn with Phi-4's chat template and generate (a `generate` job's task).",
    )
    gen.add_argument("prompt", help="the user message")
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    flags = config_flags(gen)
    flags.add(GenerateTask, ("task",), exclude={"task.prompt_template"})
    flags.add(EngineConfig, ("engine",))


def _job_commands(sub: argparse._SubParsersAction) -> None:
    """label/generate/extract/batch: JobConfig's flags, with the command's task model."""
    from phifleet.cluster import commands
    from phifleet.jobs.config import BatchTask, ExtractTask, GenerateTask, JobConfig, LabelTask

    specs = {
        "label": (
            LabelTask,
            "label every row of a dataset (Ray Data; label scoring, one label per row)",
            "Classify each row's text into one of --labels by label scoring, on a pool of replicas.",
        ),
        "generate": (
            GenerateTask,
            "generate a completion for every row of a dataset (Ray Data)",
            "Fill --prompt-template from each row and generate, on a pool of replicas.",
        ),
        "extract": (
            ExtractTask,
            "extract a JSON schema's fields from every row of a dataset, as typed columns (Ray Data)",
            "Decode each row's object under --schema (structured output), validate it, and write its fields as "
            "columns; string-enum and boolean fields get exact per-value probabilities by label scoring.",
        ),
        "batch": (
            BatchTask,
            "run an OpenAI Batch API input file (JSONL of /v1/chat/completions or /v1/completions requests)",
            "Writes OUT/output.jsonl and OUT/errors.jsonl in the OpenAI Batch output format.",
        ),
    }
    for name, (task, help_, description) in specs.items():
        p = _subparser(sub, name, commands.job, help=help_, description=description)
        config_flags(p).add(JobConfig, choose={"task": task})
        p.add_argument("--replicas", type=int, default=None, help="fixed pool size: sets pool min and max replicas")
        p.add_argument("--dump-config", action="store_true", help="print the job config as YAML and exit")


def _serve_command(sub: argparse._SubParsersAction) -> None:
    from phifleet.cluster import local_serve
    from phifleet.serve.config import ServeConfig

    srv = _subparser(
        sub,
        "serve",
        local_serve.serve,
        help="run the OpenAI-compatible endpoint locally (Ray Serve on an embedded Ray; Ctrl-C stops it)",
        description=(
            "Serve /v1/models, /v1/chat/completions, /v1/completions and /v1/classify. Flags override --config."
        ),
    )
    srv.add_argument("--config", type=Path, default=None, help="serve config, YAML or JSON (serve.config.ServeConfig)")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    srv.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    config_flags(srv).add(ServeConfig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phifleet", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"phifleet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="INFO logs, and Ray Data's own progress output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _model_commands(sub)
    _generate_one(sub)
    _job_commands(sub)
    _serve_command(sub)

    from phifleet.cluster import cluster_cli

    cluster_cli.add_parser(sub)
    return parser


def _handler(args: argparse.Namespace) -> Handler:
    if args.command == "cluster":
        from phifleet.cluster import cluster_cli

        return cluster_cli.COMMANDS[args.cluster_command]
    return args.handler


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from phifleet.engine.errors import EngineError
    from phifleet.jobs.errors import JobInputError

    try:
        return _handler(args)(args)
    except ConfigError as exc:
        print(f"phifleet: invalid configuration: {exc}", file=sys.stderr)
    except ValidationError as exc:  # a config file's values
        from phifleet.protocol.errors import format_validation_error

        print(f"phifleet: invalid configuration: {format_validation_error(exc)}", file=sys.stderr)
    except EngineError as exc:
        where = f" ({exc.param})" if exc.param else ""
        print(f"phifleet: error{where}: {exc.message}", file=sys.stderr)
    except JobInputError as exc:
        print(f"phifleet: error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
