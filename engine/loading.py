"""Resolve a model source to a local directory and load tokenizer + model, with no network access."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from phifleet.engine.chat_template import IM_END, PAD, PHI4_CHAT_TEMPLATE
from phifleet.engine.config import TINY_MODEL_NAME, EngineConfig
from phifleet.engine.errors import ModelNotFoundError, UnsupportedConfigError

log = logging.getLogger(__name__)


def resolve_model_dir(model: str) -> Path:
    """A local directory, the embedded tiny model, or a Hugging Face id found in the local cache only."""
    if model == TINY_MODEL_NAME:
        from phifleet.engine.tiny.build import tiny_model_dir

        return tiny_model_dir()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json", param="model")
        return path
    if _is_hub_id(model):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(model, local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError and friends
            raise ModelNotFoundError(
                f"model {model!r} is not a local directory and is not in the local Hugging Face cache "
                "(phifleet never downloads at run time: fill the cache or pass a directory)",
                param="model",
            ) from exc
    raise ModelNotFoundError(f"model directory {model!r} does not exist", param="model")


def _is_hub_id(model: str) -> bool:
    return model.count("/") == 1 and not model.startswith((".", "/", "~"))


def served_model_name(config: EngineConfig) -> str:
    """The id clients and result rows see: configured, else 'phi4-tiny', a hub id as given, or a directory's name.

    Worked out from the config's text alone, so a serve ingress without the weights and a job driver that
    resolved them to a cache snapshot agree on it.
    """
    if config.served_model_name:
        return config.served_model_name
    model = config.model
    if model == TINY_MODEL_NAME or _is_hub_id(model):
        return model
    return Path(model).expanduser().name or model


@dataclass(frozen=True)
class ResolvedModel:
    """Everything engine, jobs and serve need about a model source before (or without) loading its weights."""

    path: Path
    served_name: str
    context_window: int

    def tokenizer(self) -> PreTrainedTokenizerBase:
        return load_tokenizer(self.path)


def resolve_model(config: EngineConfig) -> ResolvedModel:
    """The one model resolution: local directory, served name and context window (reads config.json only)."""
    from transformers import AutoConfig

    path = resolve_model_dir(config.model)
    return ResolvedModel(path, served_model_name(config), context_window(AutoConfig.from_pretrained(path), config))


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    return configure_tokenizer(AutoTokenizer.from_pretrained(model_dir))


def configure_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (batched decoding appends on the right), a pad token, Phi-4's template if none."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = PAD if PAD in tok.get_vocab() else tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = PHI4_CHAT_TEMPLATE
    if IM_END not in tok.get_vocab():
        log.warning("tokenizer has no %s token: generation will stop only at its eos token", IM_END)
    return tok


def check_dtype(dtype: torch.dtype, device: str) -> None:
    if device == "cpu" and dtype == torch.float16:
        raise UnsupportedConfigError(
            "dtype float16 is not supported on the CPU (DeepSpeed's CPU accelerator refuses it): "
            "use float32 or bfloat16",
            param="dtype",
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedConfigError("device cuda requested but no CUDA device is available", param="device")


def load_model(model_dir: Path, config: EngineConfig) -> torch.nn.Module:
    device = config.resolved_device()
    dtype = config.resolved_dtype()
    check_dtype(dtype, device)
    # With tensor parallelism DeepSpeed shards from CPU memory and moves each shard to its GPU.
    target = "cpu" if config.tensor_parallel_size > 1 else device
    hf_logging.disable_progress_bar()  # one bar per replica is noise in job and server logs
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(target)
    model.eval()
    return model


def context_window(model_config: object, config: EngineConfig) -> int:
    """Tokens of prompt + completion a request may use: the model's maximum, or less if configured."""
    model_max = getattr(model_config, "max_position_embeddings", None) or 4096
    return min(config.max_model_len or model_max, model_max)
