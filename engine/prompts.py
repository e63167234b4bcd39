"""Prompt builders shared by the jobs and the server, so both ask the model the same way."""

from __future__ import annotations

from collections.abc import Sequence

from phifleet.engine.chat_template import render_chat

DEFAULT_CLASSIFY_INSTRUCTION = "Classify the text as one of: {labels}. Answer with the label only."


def classification_prompt(text: str, labels: Sequence[str], instruction: str | None = None) -> str:
    """System instruction naming the labels, the text as the user turn, ready for the assistant's answer."""
    system = (instruction or DEFAULT_CLASSIFY_INSTRUCTION).replace("{labels}", ", ".join(labels))
    return render_chat([{"role": "system", "content": system}, {"role": "user", "content": text}])
