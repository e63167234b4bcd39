"""Engine configuration: the one pydantic model every front door (CLI, jobs, serve, Helm) maps onto."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

TINY_MODEL_NAME = "phi4-tiny"

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Backend = Literal["deepspeed", "hf"]
BatchingMode = Literal["auto", "static", "continuous"]
Device = Literal["auto", "cpu", "cuda"]


class EngineConfig(BaseModel):
    """How to load and run one Phi-4 replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default=TINY_MODEL_NAME,
        description=(
            "A local model directory, a Hugging Face id already in the local cache (never downloaded at run "
            f"time), or '{TINY_MODEL_NAME}' for the toy model shipped with phifleet."
        ),
    )
    served_model_name: str | None = Field(
        default=None,
        description=(
            "The id clients pass as `model`, reported in results and by /v1/models; defaults to the model's "
            "directory name (or the hub id, or phi4-tiny)."
        ),
    )
    dtype: Dtype = Field(
        default="auto",
        description="Weights and activations dtype. auto: bfloat16 on GPU, float32 on CPU (CPU bf16 is slow).",
    )
    device: Device = Field(default="auto", description="auto picks CUDA when available.")
    max_model_len: int | None = Field(
        default=None,
        gt=0,
        description="Context window (prompt + completion) in tokens; defaults to the model's own maximum.",
    )
    backend: Backend = Field(
        default="deepspeed",
        description="deepspeed: prepared by deepspeed.init_inference (AutoTP for tp > 1); hf: plain transformers.",
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="GPUs one replica spans (DeepSpeed AutoTP). Must divide the KV head count.",
    )
    kernel_inject: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "DeepSpeed kernel injection. auto: on only where DeepSpeed has a policy for the architecture "
            "(none exists for Phi-3/Phi-4, so auto is off for them) and a GPU is present."
        ),
    )
    batching: BatchingMode = Field(
        default="auto",
        description=(
            "continuous: phifleet's iteration-level scheduler over a paged KV pool (requests join and leave "
            "at every step, chunked prefill, CUDA-graph decode on GPU); static: length-bucketed padded batches "
            "decoded in lock-step. auto is continuous (bench/README.md, 'Why the defaults')."
        ),
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Rows per forward pass; default 128 on GPU, 32 on CPU. Large batches saturate compute; small ones cut "
            "latency (bench/README.md, 'Why the defaults')."
        ),
    )
    max_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Upper bound on rows x (prompt + max_tokens) in one batch, which bounds KV-cache memory; default "
            "131072 on GPU (fits Phi-4 on an 80 GB GPU), 16384 on CPU. Larger allows bigger batches; smaller "
            "leaves memory free."
        ),
    )
    kv_cache_tokens: int | None = Field(
        default=None,
        ge=16,
        description=(
            "Continuous batching: tokens the preallocated KV pool holds, over all running requests. Default on "
            "GPU: what gpu_memory_utilization leaves after the weights and step activations; on CPU: "
            "max_batch_tokens."
        ),
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Continuous batching on GPU: the share of the card's memory the replica may use (weights + KV).",
    )
    max_step_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Continuous batching: tokens one forward pass computes (running decodes plus prefill chunks); a longer "
            "prompt is prefilled in chunks between decode steps. Default 8192 on GPU, 2048 on CPU."
        ),
    )
    kv_block_size: int = Field(default=16, ge=1, le=256, description="Tokens per KV-pool block.")
    prefix_caching: bool = Field(
        default=True,
        description=(
            "Continuous batching: keep computed prompt blocks and share them by reference with later requests "
            "that start with the same tokens (system prompts, label instructions); evicted least recently used."
        ),
    )
    attention_kernel: Literal["auto", "triton", "torch"] = Field(
        default="auto",
        description=(
            "Continuous batching: decode attention over the paged KV pool. triton: a split-K kernel (GPU); torch: "
            "a fixed-shape gather (any device). auto: triton on GPU when the triton package imports."
        ),
    )
    cuda_graphs: bool = Field(
        default=True, description="Continuous batching on GPU: replay decode steps from captured CUDA graphs."
    )
    seed: int = Field(
        default=0,
        description=(
            "0: a request without its own seed samples from fresh randomness. Otherwise such requests draw their "
            "random streams from this seed in arrival order (reproducible runs)."
        ),
    )

    def resolved_device(self) -> str:
        if self.device == "auto":
            import torch  # here, not at import: the CLI and the chart schema read this model without torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_dtype(self) -> torch.dtype:
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.resolved_device() == "cuda" else torch.float32
        return getattr(torch, self.dtype)

    def resolved_batching(self) -> Literal["static", "continuous"]:
        return "continuous" if self.batching == "auto" else self.batching

    def resolved_max_batch_size(self) -> int:
        if self.max_batch_size is not None:
            return self.max_batch_size
        return 128 if self.resolved_device() == "cuda" else 32

    def resolved_max_step_tokens(self) -> int:
        if self.max_step_tokens is not None:
            return self.max_step_tokens
        return 8192 if self.resolved_device() == "cuda" else 2048

    def resolved_max_batch_tokens(self) -> int:
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return 131072 if self.resolved_device() == "cuda" else 16384
