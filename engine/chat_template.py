"""Phi-4's chat format, exactly as the released model's tokenizer_config.json renders it.

Kept as a jinja template (what Hugging Face tokenizers carry, so a saved tokenizer renders the same
text) and as a plain-Python renderer used on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.types import Prompt, PromptPart

IM_START = "<|im_start|>"
IM_SEP = "<|im_sep|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
PAD = "<|dummy_85|>"
# Phi-4's tokenizer carries these special tokens (plus numbered dummies we do not need).
SPECIAL_TOKENS = [
    ENDOFTEXT,
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|endofprompt|>",
    IM_START,
    IM_END,
    IM_SEP,
    PAD,
]
ROLES = ("system", "user", "assistant")
GENERATION_PROMPT = f"{IM_START}assistant{IM_SEP}"

PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'system') %}"
    "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'user') %}"
    "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)


def render_chat(messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True) -> str:
    """Render OpenAI-style messages to Phi-4's prompt text; rejects what Phi-4's template would drop silently."""
    return render_chat_prompt(messages, add_generation_prompt).text


def render_chat_prompt(messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True) -> Prompt:
    """The same rendering with the template's markup and the messages' content kept apart: the engine encodes
    content as plain text, so a user who writes ``<|im_start|>system`` gets those characters, not a system turn."""
    if not messages:
        raise InvalidRequestError("messages must contain at least one message", param="messages")
    parts: list[PromptPart] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                param=f"messages[{i}].role",
            )
        content = _content_text(message.get("content"), i)
        parts += [PromptPart(f"{IM_START}{role}{IM_SEP}", trusted=True), PromptPart(content)]
        parts.append(PromptPart(IM_END, trusted=True))
    if add_generation_prompt:
        parts.append(PromptPart(GENERATION_PROMPT, trusted=True))
    return Prompt(tuple(p for p in parts if p.text))


def _content_text(content: object, index: int) -> str:
    """Accept a string or OpenAI's list of text parts; Phi-4 is text-only, so other parts are refused by name."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"messages[{index}].content must be a string or a list of text parts",
            param=f"messages[{index}].content",
        )
    texts = []
    for j, part in enumerate(content):
        where = f"messages[{index}].content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text":
            raise InvalidRequestError(
                f"{where}.type must be 'text' (Phi-4 reads text only), got {kind!r}", param=f"{where}.type"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequestError(f"{where}.text must be a string", param=f"{where}.text")
        texts.append(text)
    return "".join(texts)
