"""Engine configuration: the one pydantic model every front door (CLI, jobs, serve, Helm) maps onto."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

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
            f"time), or '{TINY_MODEL_NAME}' for the embedded toy model (built on first use)."
        ),
    )
    served_model_name: str | None = Field(
        default=None,
        description="Name reported in results and by /v1/models; defaults to the model's basename.",
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
            "static: length-bucketed padded batches (best on CPU); continuous: transformers' paged-KV "
            "ContinuousBatchingManager (best on GPU under concurrent load); auto picks by device."
        ),
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        description="Rows per forward pass. Large batches saturate compute; small ones cut latency.",
    )
    max_batch_tokens: int = Field(
        default=16384,
        ge=1,
        description="Upper bound on padded tokens (rows x longest row) in one static batch, to bound memory.",
    )
    seed: int = Field(default=0, description="Seed for weight-free randomness (continuous batching's sampler).")

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.resolved_device() == "cuda" else torch.float32
        return getattr(torch, self.dtype)

    def resolved_batching(self) -> Literal["static", "continuous"]:
        if self.batching == "auto":
            return "continuous" if self.resolved_device() == "cuda" else "static"
        return self.batching
