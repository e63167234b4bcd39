"""A real (if tiny) tokenizer for tests that need token counts but no model: one token per word."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from phifleet.engine.chat_template import SPECIAL_TOKENS
from phifleet.engine.loading import configure_tokenizer


def word_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Whitespace/punctuation pre-tokenization over a word-level vocabulary; unknown words are one <unk> token."""
    vocab = {t: i for i, t in enumerate(["<unk>", *SPECIAL_TOKENS, *(words or [])])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", additional_special_tokens=SPECIAL_TOKENS)
    return configure_tokenizer(fast)


def save_word_tokenizer(path: Path) -> Path:
    """A model directory holding only the tokenizer: enough for RequestValidator.from_model_dir."""
    word_tokenizer().save_pretrained(path)
    return path
