"""DeepSpeed-inference preparation of a loaded model (kernel injection where a policy exists, AutoTP)."""

from __future__ import annotations

import copy
import logging
import os

import torch

from phifleet.engine.config import EngineConfig
from phifleet.engine.errors import UnsupportedConfigError

log = logging.getLogger(__name__)


def has_injection_policy(model: torch.nn.Module) -> bool:
    """DeepSpeed can inject fused kernels only for layer classes it has a policy for (none for Phi-3)."""
    from deepspeed.module_inject.replace_policy import replace_policies

    layer_types = {type(m) for m in model.modules()}
    for policy in replace_policies:
        orig = getattr(policy, "_orig_layer_class", None)
        classes = orig if isinstance(orig, list) else [orig]
        if any(c is not None and c in layer_types for c in classes):
            return True
    return False


def check_tensor_parallel(model_config: object, tp: int) -> None:
    heads = getattr(model_config, "num_attention_heads", None)
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    if heads is None or heads % tp or kv_heads % tp:
        raise UnsupportedConfigError(
            f"tensor_parallel_size {tp} must divide the attention heads ({heads}) and KV heads ({kv_heads})",
            param="tensor_parallel_size",
        )


def localize_attention_heads(model: torch.nn.Module, tp: int) -> int:
    """Give each sharded attention layer a config whose head count is its own shard's.

    Phi-3 attention slices its fused qkv output at ``config.num_attention_heads * head_dim``; the
    config object is shared by all layers and AutoTP does not touch it, so without this every rank
    slices at the unsharded offset. Returns how many layers were patched.
    """
    patched = 0
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is None or not hasattr(module, "qkv_proj") or not hasattr(cfg, "num_attention_heads"):
            continue
        local = copy.copy(cfg)
        local.num_attention_heads = cfg.num_attention_heads // tp
        module.config = local
        if hasattr(module, "num_key_value_heads") and module.num_key_value_heads == cfg.num_key_value_heads:
            module.num_key_value_heads = cfg.num_key_value_heads // tp
        patched += 1
    return patched


def prepare(model: torch.nn.Module, config: EngineConfig) -> torch.nn.Module:
    """Wrap with deepspeed.init_inference; the returned object is called like the model."""
    if config.backend == "hf":
        return model
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # say so up front instead of DeepSpeed's probe warning
    import deepspeed

    tp = config.tensor_parallel_size
    if tp > 1:
        check_tensor_parallel(model.config, tp)
    device = config.resolved_device()
    inject = {"on": True, "off": False}.get(config.kernel_inject)
    if inject is None:
        inject = device == "cuda" and has_injection_policy(model)
    engine = deepspeed.init_inference(
        model,
        dtype=config.resolved_dtype(),
        tensor_parallel={"tp_size": tp},
        replace_with_kernel_inject=inject,
    )
    if tp > 1:
        n = localize_attention_heads(engine.module, tp)
        log.info("AutoTP tp=%d: localized the head count of %d attention layers", tp, n)
    return engine


def unwrap(prepared: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module inside a DeepSpeed InferenceEngine (or the model itself)."""
    return getattr(prepared, "module", prepared)
