"""Phi-4's chat format, exactly as the released model's tokenizer_config.json renders it.

Kept as a jinja template (what Hugging Face tokenizers carry, so a saved tokenizer renders the same
text) and as a plain-Python renderer used on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from phifleet.engine.errors import InvalidRequestError

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
    if not messages:
        raise InvalidRequestError("messages must contain at least one message", param="messages")
    parts: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                param=f"messages[{i}].role",
            )
        content = _content_text(message.get("content"), i)
        parts.append(f"{IM_START}{role}{IM_SEP}{content}{IM_END}")
    if add_generation_prompt:
        parts.append(GENERATION_PROMPT)
    return "".join(parts)


def _content_text(content: object, index: int) -> str:
    """Accept a string or OpenAI's list of text parts; Phi-4 is text-only."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise InvalidRequestError(
        f"messages[{index}].content must be a string or a list of text parts",
        param=f"messages[{index}].content",
    )
