"""DeepSpeed-inference preparation: same numbers as plain transformers, AutoTP head fix, no bogus injection."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from phifleet.engine import EngineConfig
from phifleet.engine.deepspeed_prep import check_tensor_parallel, has_injection_policy, localize_attention_heads
from phifleet.engine.errors import UnsupportedConfigError


def test_engine_is_deepspeed_prepared(engine, hf_engine):
    from deepspeed.inference.engine import InferenceEngine

    assert isinstance(engine.model, InferenceEngine)
    assert not isinstance(hf_engine.model, InferenceEngine)


def test_deepspeed_and_hf_logits_identical_fp32(engine, hf_engine):
    ids = torch.tensor([engine.encode("<|im_start|>user<|im_sep|>The kettle is great<|im_end|>")])
    with torch.inference_mode():
        ds = engine.model(input_ids=ids).logits
        hf = hf_engine.model(input_ids=ids).logits
    assert ds.dtype == torch.float32
    assert torch.equal(ds, hf)


def test_no_kernel_injection_policy_for_phi3(engine):
    """DeepSpeed ships no Phi-3 injection policy, so kernel_inject=auto leaves the model's own layers."""
    assert not has_injection_policy(engine.hf_model)
    assert type(engine.hf_model.model.layers[0]).__name__ == "Phi3DecoderLayer"


def test_localize_attention_heads_gives_each_layer_its_shard_count(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    shared = model.config
    heads, kv = shared.num_attention_heads, shared.num_key_value_heads
    patched = localize_attention_heads(model, 2)
    attn = [m for m in model.modules() if hasattr(m, "qkv_proj")]
    assert patched == len(attn) == shared.num_hidden_layers
    for m in attn:
        assert m.config.num_attention_heads == heads // 2
        assert m.num_key_value_heads == kv // 2
    assert shared.num_attention_heads == heads  # the model-wide config is untouched


@pytest.mark.parametrize("tp", [3, 4])
def test_tensor_parallel_must_divide_heads(tiny_dir, tp):
    cfg = AutoModelForCausalLM.from_pretrained(tiny_dir).config  # 4 heads, 2 KV heads
    with pytest.raises(UnsupportedConfigError, match="tensor_parallel_size") as err:
        check_tensor_parallel(cfg, tp)
    assert err.value.param == "tensor_parallel_size"


def test_auto_resolution_on_cpu():
    cfg = EngineConfig()
    if torch.cuda.is_available():
        pytest.skip("CPU defaults")
    assert cfg.resolved_device() == "cpu"
    assert cfg.resolved_dtype() == torch.float32
    assert cfg.resolved_batching() == "continuous"
    assert (cfg.resolved_max_batch_size(), cfg.resolved_max_batch_tokens(), cfg.resolved_max_step_tokens()) == (
        32,
        16384,
        2048,
    )


def test_gpu_defaults_follow_the_measurement():
    """bench/results/gpu.md: batch 128 still gains over 32; 8192-token steps keep prefill near peak compute."""
    cfg = EngineConfig(device="cuda")
    assert cfg.resolved_dtype() == torch.bfloat16
    assert cfg.resolved_batching() == "continuous"
    assert (cfg.resolved_max_batch_size(), cfg.resolved_max_step_tokens()) == (128, 8192)
    assert EngineConfig(device="cuda", batching="continuous", max_batch_size=8).resolved_max_batch_size() == 8
