"""Every bad input raises a clear error type whose message and ``param`` name the problem."""

import pytest
from pydantic import ValidationError

from phifleet.engine import (
    ContextLengthExceededError,
    Engine,
    EngineConfig,
    GenerationRequest,
    InvalidRequestError,
    ModelNotFoundError,
    SamplingParams,
    UnsupportedConfigError,
)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(engine, prompt):
    with pytest.raises(InvalidRequestError, match="non-empty") as err:
        engine.generate([GenerationRequest(prompt)])
    assert err.value.param == "prompt"


def test_prompt_longer_than_context(engine):
    long_prompt = "word " * (engine.max_model_len + 10)
    with pytest.raises(ContextLengthExceededError, match="context window") as err:
        engine.generate([GenerationRequest(long_prompt)])
    assert err.value.param == "prompt"
    assert isinstance(err.value, InvalidRequestError)


def test_prompt_plus_max_tokens_over_context(engine):
    prompt_len = len(engine.encode("hello there"))
    params = SamplingParams(max_tokens=engine.max_model_len - prompt_len + 1)
    with pytest.raises(ContextLengthExceededError):
        engine.generate([GenerationRequest("hello there", params)])


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_max_tokens_not_positive(engine, max_tokens):
    with pytest.raises(InvalidRequestError, match="max_tokens") as err:
        engine.generate([GenerationRequest("hello", SamplingParams(max_tokens=max_tokens))])
    assert err.value.param == "max_tokens"


def test_context_too_long_for_label_scoring(engine):
    with pytest.raises(ContextLengthExceededError) as err:
        engine.score_labels(["ok", "word " * (engine.max_model_len + 1)], ["a", "b"])
    assert err.value.param == "prompts[1]"


def test_unknown_dtype_names_the_field():
    with pytest.raises(ValidationError, match="dtype"):
        EngineConfig(dtype="float8")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backend", "vllm"),
        ("batching", "dynamic"),
        ("tensor_parallel_size", 0),
        ("max_batch_size", 0),
        ("unknown_knob", 1),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        EngineConfig(**{field: value})


@pytest.mark.parametrize(("field", "value"), [("temperature", -1.0), ("top_p", 0.0), ("top_k", -1), ("stop", [""])])
def test_bad_sampling_values_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        SamplingParams(**{field: value})


def test_missing_model_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist") as err:
        Engine(EngineConfig(model=str(tmp_path / "nope")))
    assert err.value.param == "model"


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"config\.json"):
        Engine(EngineConfig(model=str(tmp_path)))


def test_hub_id_not_in_local_cache_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        Engine(EngineConfig(model="microsoft/phi-4"))


def test_fp16_refused_on_cpu(tiny_dir):
    with pytest.raises(UnsupportedConfigError, match="float16") as err:
        Engine(EngineConfig(model=str(tiny_dir), dtype="float16", device="cpu"))
    assert err.value.param == "dtype"
