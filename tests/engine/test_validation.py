"""The weight-free request validator: the checks the engine runs, with the messages clients and job rows get."""

import pytest

from phifleet.engine.errors import ContextLengthExceededError, InvalidRequestError
from phifleet.engine.types import GenerationRequest, SamplingParams
from phifleet.engine.validation import RequestValidator
from tests.word_tokenizer import save_word_tokenizer, word_tokenizer


@pytest.fixture
def validator() -> RequestValidator:
    return RequestValidator(word_tokenizer(["yes", "no"]), context_window=10)


def test_generation_requests_must_fit_the_context_window(validator):
    assert len(validator.generation(GenerationRequest("a b c", SamplingParams(max_tokens=7)))) == 3
    with pytest.raises(ContextLengthExceededError) as err:
        validator.generation(GenerationRequest("a b c d", SamplingParams(max_tokens=7)))
    assert err.value.param == "prompt"
    assert str(err.value) == "prompt is 4 tokens and 7 more are requested, but the context window is 10 tokens"


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "param"), [("", 1, "prompt"), ("   ", 1, "prompt"), ("hi", 0, "max_tokens")]
)
def test_bad_generation_requests_name_the_field(validator, prompt, max_tokens, param):
    request = GenerationRequest(prompt, SamplingParams.model_construct(max_tokens=max_tokens))
    with pytest.raises(InvalidRequestError) as err:
        validator.generation(request)
    assert err.value.param == param and not isinstance(err.value, ContextLengthExceededError)


def test_labels_end_in_im_end_and_reserve_the_longest(validator):
    ids = validator.label_ids(["yes", "no way"])
    assert [len(i) for i in ids] == [2, 3] and ids[0][-1] == validator.im_end_id
    assert len(validator.label_prompt_ids("a b c d e f g", ids)) == 7  # 7 + 3 = 10 fits
    with pytest.raises(ContextLengthExceededError, match="prompts\\[2\\] is 8 tokens and 3 more"):
        validator.label_prompt_ids("a b c d e f g h", ids, param="prompts[2]")


@pytest.mark.parametrize("labels", [[], ["yes", "yes"], ["yes", " "]])
def test_bad_labels(validator, labels):
    with pytest.raises(InvalidRequestError) as err:
        validator.label_ids(labels)
    assert err.value.param == "labels"


def test_from_model_dir_needs_only_the_tokenizer(tmp_path):
    validator = RequestValidator.from_model_dir(save_word_tokenizer(tmp_path), 5)
    assert validator.context_window == 5 and validator.encode("one two") == [0, 0]


def test_the_engine_refuses_with_the_validators_message(engine, tiny_dir):
    """Jobs validate rows on CPU workers with a validator built from the model directory: same words as the engine."""
    validator = RequestValidator.from_model_dir(tiny_dir, engine.max_model_len)
    request = GenerationRequest("word " * 3000, SamplingParams(max_tokens=5))
    with pytest.raises(ContextLengthExceededError) as from_engine:
        engine.generate([request])
    with pytest.raises(ContextLengthExceededError) as from_validator:
        validator.generation(request)
    assert str(from_engine.value) == str(from_validator.value)
