"""One forward pass over a mixed step (decode tokens + prefill chunks) on the Hugging Face Phi-3 modules.

The layers are the model's own modules (so DeepSpeed's AutoTP-sharded linears and their all-reduces stay in
place); only the loop around them is ours. Tokens are flat ([tokens, hidden], no padding): the linear layers
see exactly the tokens that exist, attention reads K/V through block tables, and no attention mask is built.
Decode-only steps can be replayed from captured CUDA graphs (``cuda_graphs.DecodeGraphs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb

from phifleet.engine.kv_pool import KVPool
from phifleet.engine.paged_attention import decode_attention, prefill_attention, triton_usable, write_kv


@dataclass
class PrefillChunk:
    """Tokens [offset, offset + length) of the flat step are one sequence's positions [start, start + length)."""

    offset: int
    length: int
    start: int
    context_slots: torch.Tensor  # slots of positions 0 .. start + length, on the device
    mask: torch.Tensor | None = None  # [length, keys] bool; None: causal (label branches bring their own)


@dataclass
class StepBatch:
    """What one forward pass computes. The first ``num_decode`` tokens are one decode token per sequence."""

    input_ids: torch.Tensor  # [tokens] long
    positions: torch.Tensor  # [tokens] long
    slots: torch.Tensor  # [tokens] long: where each token's K/V is written
    num_decode: int
    block_tables: torch.Tensor  # [num_decode, blocks] int32
    context_lens: torch.Tensor  # [num_decode] int32, the new token included
    prefills: list[PrefillChunk] = field(default_factory=list)
    logits_index: torch.Tensor | None = None  # flat token indices whose logits are returned (None: all)


class UnsupportedModelError(ValueError):
    pass


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The Phi3Model inside a Phi3ForCausalLM (or DeepSpeed's wrapper of one)."""
    model = getattr(model, "module", model)
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        raise UnsupportedModelError(f"{type(model).__name__} is not a Phi-3-style causal LM")
    return inner


class ModelRunner:
    """Runs StepBatches through the model; owns no scheduling state."""

    def __init__(self, model: torch.nn.Module, pool: KVPool, use_triton: bool | None = None) -> None:
        self.model = getattr(model, "module", model)
        self.decoder = decoder_of(self.model)
        cfg = self.model.config
        window = getattr(cfg, "sliding_window", None)
        if window is not None and window < getattr(cfg, "max_position_embeddings", 0):
            raise UnsupportedModelError(f"sliding-window attention ({window} tokens) is not supported by this engine")
        self.pool = pool
        self.layers = list(self.decoder.layers[: cfg.num_hidden_layers])
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.scale = attn.scaling
        self.use_triton = triton_usable(pool.device) if use_triton is None else use_triton

    @torch.inference_mode()
    def forward(self, batch: StepBatch) -> torch.Tensor:
        """Logits [selected tokens, vocab] in the model's dtype."""
        hidden = self.decoder.embed_tokens(batch.input_ids)
        cos, sin = self.decoder.rotary_emb(hidden, batch.positions.unsqueeze(0))
        tokens = hidden.shape[0]
        nd = batch.num_decode
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            heads = attn.config.num_attention_heads
            kv_heads = attn.num_key_value_heads
            d = self.head_dim
            x = layer.input_layernorm(hidden)
            qkv = attn.qkv_proj(x)
            q = qkv[:, : heads * d].view(1, tokens, heads, d)
            k = qkv[:, heads * d : (heads + kv_heads) * d].view(1, tokens, kv_heads, d)
            v = qkv[:, (heads + kv_heads) * d :].view(tokens, kv_heads, d)
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)
            q, k = q[0], k[0]
            k_cache, v_cache = self.pool.k[i], self.pool.v[i]
            write_kv(k_cache, v_cache, batch.slots, k, v)
            if nd == tokens:
                out = decode_attention(
                    q, k_cache, v_cache, batch.block_tables, batch.context_lens, self.scale, self.use_triton
                )
            else:
                out = torch.empty_like(q)
                if nd:
                    out[:nd] = decode_attention(
                        q[:nd], k_cache, v_cache, batch.block_tables, batch.context_lens, self.scale, self.use_triton
                    )
                for c in batch.prefills:
                    span = slice(c.offset, c.offset + c.length)
                    out[span] = prefill_attention(
                        q[span], k_cache, v_cache, c.context_slots, c.start, self.scale, c.mask
                    )
            hidden = hidden + attn.o_proj(out.reshape(tokens, heads * d))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        if batch.logits_index is not None:
            hidden = hidden.index_select(0, batch.logits_index)
        return self.model.lm_head(self.decoder.norm(hidden))

    def decode_forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
    ) -> torch.Tensor:
        """A decode-only step with fixed shapes: what a CUDA graph captures."""
        n = input_ids.shape[0]
        return self.forward(StepBatch(input_ids, positions, slots, n, block_tables, context_lens))
