"""phi4-tiny: Phi-4's architecture at toy scale, built deterministically and offline."""

import hashlib
import json

from phifleet.engine.chat_template import SPECIAL_TOKENS
from phifleet.engine.tiny.build import METADATA_FILE, build_tiny_model, ensure_tiny_model, is_built
from safetensors.torch import load_file
from transformers import AutoConfig


def digest(path) -> str:
    tensors = load_file(path / "model.safetensors")
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].numpy().tobytes())
    h.update((path / "tokenizer.json").read_bytes())
    return h.hexdigest()


def test_build_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_tiny_model(a, steps=8)
    build_tiny_model(b, steps=8)
    assert digest(a) == digest(b)
    assert json.loads((a / METADATA_FILE).read_text())["steps"] == 8


def test_has_phi4_architecture_and_tokens(tiny_dir):
    cfg = AutoConfig.from_pretrained(tiny_dir)
    assert cfg.architectures == ["Phi3ForCausalLM"]
    assert cfg.num_attention_heads // cfg.num_key_value_heads == 2
    assert not cfg.tie_word_embeddings  # untied, like Phi-4
    vocab = json.loads((tiny_dir / "tokenizer.json").read_text())["added_tokens"]
    assert {t["content"] for t in vocab} >= set(SPECIAL_TOKENS)
    meta = json.loads((tiny_dir / METADATA_FILE).read_text())
    assert 100_000 < meta["parameters"] < 5_000_000


def test_ensure_reuses_a_built_model(tiny_dir):
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tiny_dir) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before
    assert is_built(tiny_dir)
