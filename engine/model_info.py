"""Describe a model directory without loading its weights (sizes come from safetensors headers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from phifleet.engine.chat_template import SPECIAL_TOKENS
from phifleet.engine.loading import resolve_model_dir
from phifleet.engine.tiny.build import METADATA_FILE


def _parameter_count(model_dir: Path) -> int | None:
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                total += math.prod(fh.get_slice(key).get_shape())
    return total


def model_info(model: str) -> dict[str, object]:
    from transformers import AutoConfig, AutoTokenizer

    model_dir = resolve_model_dir(model)
    cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    vocab = tok.get_vocab()
    info: dict[str, object] = {
        "path": str(model_dir),
        "architecture": (cfg.architectures or [type(cfg).__name__])[0],
        "layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": getattr(cfg, "intermediate_size", None),
        "attention_heads": cfg.num_attention_heads,
        "kv_heads": getattr(cfg, "num_key_value_heads", None),
        "vocab_size": cfg.vocab_size,
        "max_context": getattr(cfg, "max_position_embeddings", None),
        "dtype": str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)),
        "parameters": _parameter_count(model_dir),
        "tokenizer": type(tok).__name__,
        "phi4_special_tokens": {t: vocab.get(t) for t in SPECIAL_TOKENS},
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
    }
    meta = model_dir / METADATA_FILE
    if meta.is_file():
        info["phi4_tiny"] = json.loads(meta.read_text())
    return info
