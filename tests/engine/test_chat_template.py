import pytest
from transformers import AutoTokenizer

from phifleet.engine.chat_template import GENERATION_PROMPT, render_chat
from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.prompts import classification_prompt

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
]


def test_renders_phi4_format_exactly():
    assert render_chat(MESSAGES) == (
        "<|im_start|>system<|im_sep|>You are terse.<|im_end|>"
        "<|im_start|>user<|im_sep|>Hi<|im_end|>"
        "<|im_start|>assistant<|im_sep|>Hello.<|im_end|>"
        "<|im_start|>user<|im_sep|>Bye<|im_end|>"
        "<|im_start|>assistant<|im_sep|>"
    )
    assert render_chat(MESSAGES, add_generation_prompt=False).endswith("Bye<|im_end|>")
    assert GENERATION_PROMPT == "<|im_start|>assistant<|im_sep|>"


def test_saved_tokenizer_template_matches_renderer(tiny_dir):
    """The jinja template shipped with the model renders the same text as the hot-path renderer."""
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    for gen in (True, False):
        assert tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=gen) == render_chat(
            MESSAGES, gen
        )


def test_special_tokens_are_single_tokens(engine):
    ids = engine.encode(render_chat([{"role": "user", "content": "x"}]))
    vocab = engine.tokenizer.get_vocab()
    for token in ("<|im_start|>", "<|im_sep|>", "<|im_end|>"):
        assert vocab[token] in ids


def test_text_parts_are_joined():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert render_chat([{"role": "user", "content": parts}]) == render_chat([{"role": "user", "content": "ab"}])


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "text", "text": None}]}], "messages[0].content[0].text"),
    ],
)
def test_bad_messages_name_the_field(messages, param):
    with pytest.raises(InvalidRequestError) as err:
        render_chat(messages)
    assert err.value.param == param


def test_classification_prompt_names_the_labels():
    prompt = classification_prompt("great", ["a", "b"]).text
    assert prompt.startswith("<|im_start|>system<|im_sep|>Classify the text as one of: a, b.")
    assert prompt.endswith("<|im_start|>user<|im_sep|>great<|im_end|><|im_start|>assistant<|im_sep|>")
