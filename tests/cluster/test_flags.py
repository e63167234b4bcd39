"""CLI flags generated from the config models (cluster/flags.py): in-process, no Ray, no model."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from phifleet import __version__
from phifleet.cluster.cli import build_parser, main
from phifleet.cluster.commands import job_config
from phifleet.cluster.flags import ConfigError, ConfigFlags
from phifleet.cluster.local_serve import serve_config
from phifleet.jobs.config import GenerateTask, JobConfig
from phifleet.serve.config import ServeConfig


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare word sequences


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"phifleet {__version__}"


def test_help_shows_descriptions_choices_and_defaults(capsys):
    text = help_of(capsys, "serve")
    assert "--layout {split,single}" in text and "(default: split)" in text
    assert "--access-log, --no-access-log" in text and "(default: on)" in text
    assert "Requests one replica works on at once. (default: 64)" in text
    assert "--dtype {auto,float32,bfloat16,float16}" in text
    text = help_of(capsys, "generate")
    assert "--prompt-template PROMPT_TEMPLATE" in text and "(required)" in text
    assert "Completion tokens to generate at most, per row. (default: 128)" in text
    assert "--id-column ID_COLUMN" in text and "(default: id; '' unsets it)" in text


def test_help_carries_no_benchmark_numbers(capsys):
    text = help_of(capsys, "label")
    assert "tok/s" not in text and "H200" not in text
    assert "Large batches saturate compute; small ones cut latency" in text


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def default_flags(args: argparse.Namespace, model: type[BaseModel], **required: object) -> list[str]:
    """Every generated flag of ``args``' command, spelt out at the model's default value."""
    defaults = model.model_validate(required).model_dump()
    argv: list[str] = []
    for path, option in ConfigFlags.of(args).flags.items():
        value = defaults
        for key in path:
            value = value[key]
        if not option.startswith("--"):
            argv.insert(0, str(value))
        elif isinstance(value, bool):
            argv.append(option if value else f"--no-{option[2:]}")
        elif isinstance(value, list):
            argv += [option, ",".join(value)] if value else []
        else:
            argv += [option, "" if value is None else str(value)]
    return argv


def test_serve_flags_round_trip_to_the_default_config():
    assert serve_config(parse("serve")) == ServeConfig()
    spelt_out = default_flags(parse("serve"), ServeConfig)
    assert "--max-queued-requests" in spelt_out and "--look-back-period-s" in spelt_out
    assert serve_config(parse("serve", *spelt_out)) == ServeConfig()


def test_job_flags_round_trip_to_the_default_config():
    required = {"input": {"path": "in.jsonl"}, "output": {"path": "out"}, "task": {"kind": "generate"}}
    required["task"]["prompt_template"] = "Summarise: {text}"
    minimal = parse("generate", "in.jsonl", "--output", "out", "--prompt-template", "Summarise: {text}")
    assert job_config(minimal) == JobConfig.model_validate(required)
    spelt_out = default_flags(minimal, JobConfig, **required)
    assert "--engine-seed" in spelt_out and "--seed" in spelt_out and "--batch-size" in spelt_out
    assert job_config(parse("generate", *spelt_out)) == JobConfig.model_validate(required)


def test_flags_reach_their_fields():
    args = parse(
        "label", "in.jsonl", "--output", "o", "--labels", "a,b", "--labels", "c", "--input-format", "csv",
        "--format", "jsonl", "--id-column", "", "--replicas", "3", "--max-model-len", "none", "--dtype", "bfloat16",
    )  # fmt: skip
    config = job_config(args)
    assert config.task.labels == ["a", "b", "c"]
    assert (config.input.format, config.output.format, config.input.id_column) == ("csv", "jsonl", None)
    assert (config.pool.min_replicas, config.pool.max_replicas) == (3, 3)
    assert (config.engine.max_model_len, config.engine.dtype) == (None, "bfloat16")
    gen = job_config(parse("generate", "x", "--output", "o", "--prompt-template", "t", "--stop", "a,b", "--stop", "."))
    assert gen.task.stop == ["a,b", "."]  # stop strings are never split on commas


def test_serve_flags_override_the_config_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(
        "engine: {model: /m/phi-4, served_model_name: phi-4}\ndeployment: {autoscaling: {max_replicas: 4}}\n"
    )
    config = serve_config(parse("serve", "--config", str(path), "--max-replicas", "2", "--no-access-log"))
    assert config.engine.served_model_name == "phi-4" and config.deployment.autoscaling.max_replicas == 2
    assert config.http.access_log is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--max-replicas", "0"], "deployment.autoscaling.max_replicas (--max-replicas): Input should be"),
        (["label", "i", "--output", "o", "--labels", "a"], "task.labels (--labels): List should have at least 2"),
        (["generate-one", "hi", "--temperature", "3"], "task.temperature (--temperature): Input should be"),
    ],
)
def test_an_out_of_range_value_names_its_field_and_flag(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--layout", "triple"], "argument --layout: invalid choice: 'triple'"),
        (["serve", "--max-ongoing-requests", "many"], "argument --max-ongoing-requests: invalid int value: 'many'"),
        (["label", "i", "--output", "o"], "the following arguments are required: --labels"),
    ],
)
def test_a_malformed_value_is_refused_by_argparse_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


class Inner(BaseModel):
    seed: int = 0


class Outer(BaseModel):
    mode: Literal["a", "b"] = Field(default="a", description="100% a or b.")
    seed: int = 1
    inner: Inner = Field(default_factory=Inner)


def test_two_fields_with_one_flag_name_are_refused_at_build_time():
    with pytest.raises(ValueError, match=r"--seed would set both seed and inner\.seed"):
        ConfigFlags(argparse.ArgumentParser()).add(Outer)
    flags = ConfigFlags(argparse.ArgumentParser(), names={"inner.seed": "inner-seed"})
    flags.add(Outer)
    args = flags.parser.parse_args(["--inner-seed", "5", "--mode", "b"])
    assert flags.values(args) == {"inner": {"seed": 5}, "mode": "b"}
    assert "100% a or b. (default: a)" in flags.parser.format_help()  # '%' in a description is escaped


def test_validate_names_the_flag():
    flags = ConfigFlags(argparse.ArgumentParser())
    flags.add(GenerateTask, ("task",))
    args = flags.parser.parse_args(["--prompt-template", "t", "--top-p", "0"])
    with pytest.raises(ConfigError, match=r"task\.top_p \(--top-p\): Input should be greater than 0"):
        flags.validate(GenerateTask, flags.values(args)["task"], ("task",))


def test_min_replicas_alone_raises_the_maximum_with_it():
    """As before the flags were generated: `--min-replicas N` alone is a pool of at least N (jobs and serve)."""
    job = job_config(parse("label", "x", "--output", "o", "--labels", "a,b", "--min-replicas", "2"))
    assert (job.pool.min_replicas, job.pool.max_replicas) == (2, 2)
    grown = job_config(
        parse("label", "x", "--output", "o", "--labels", "a,b", "--min-replicas", "2", "--max-replicas", "5")
    )
    assert (grown.pool.min_replicas, grown.pool.max_replicas) == (2, 5)
    serve = serve_config(parse("serve", "--min-replicas", "3"))
    assert (serve.deployment.autoscaling.min_replicas, serve.deployment.autoscaling.max_replicas) == (3, 3)
    zero = serve_config(parse("serve", "--min-replicas", "0"))
    assert (zero.deployment.autoscaling.min_replicas, zero.deployment.autoscaling.max_replicas) == (0, 1)


def test_replicas_and_explicit_pool_sizes_are_refused_together():
    with pytest.raises(ConfigError, match="--replicas sets both pool sizes"):
        job_config(parse("label", "x", "--output", "o", "--labels", "a,b", "--replicas", "2", "--max-replicas", "5"))


def test_an_old_flat_serve_config_names_where_each_key_moved(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("model_name: phi-4\nnum_gpus: 1\nengine: {model: /m/phi-4}\n")
    with pytest.raises(ConfigError, match=r"model_name is now engine.served_model_name; num_gpus is now deployment"):
        serve_config(parse("serve", "--config", str(path)))
