"""Prompt builders shared by the jobs and the server, so both ask the model the same way."""

from __future__ import annotations

from collections.abc import Sequence

from phifleet.engine.chat_template import render_chat_prompt
from phifleet.engine.types import Prompt

DEFAULT_CLASSIFY_INSTRUCTION = "Classify the text as one of: {labels}. Answer with the label only."


def classification_prompt(text: str, labels: Sequence[str], instruction: str | None = None) -> Prompt:
    """System instruction naming the labels, the text as the user turn, ready for the assistant's answer.

    A ``Prompt``: the row's or client's text is encoded as text, whatever special-token strings it holds.
    """
    system = (instruction or DEFAULT_CLASSIFY_INSTRUCTION).replace("{labels}", ", ".join(labels))
    return render_chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": text}])


DEFAULT_EXTRACT_INSTRUCTION = "Extract from the text a JSON object that follows this JSON schema: {schema}"


def extraction_prompt(text: str, schema_text: str, instruction: str | None = None) -> Prompt:
    """System instruction carrying the schema (the grammar enforces it; the model still needs to know the fields'
    meaning), the text as the user turn. ``instruction`` may place ``{schema}`` itself."""
    system = (instruction or DEFAULT_EXTRACT_INSTRUCTION).replace("{schema}", schema_text)
    return render_chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": text}])
