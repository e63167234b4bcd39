"""Phi-4's exact model shapes (and toy ones for CPU runs), shared by the GPU benchmark and the FastGen probe."""

from __future__ import annotations

from typing import Any

PHI4: dict[str, Any] = dict(
    vocab_size=100352,
    hidden_size=5120,
    intermediate_size=17920,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=10,
    max_position_embeddings=16384,
    rope_theta=250000.0,
    tie_word_embeddings=False,
)
TINY: dict[str, Any] = dict(
    PHI4, hidden_size=256, intermediate_size=896, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2
)
