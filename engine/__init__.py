"""One Phi-4 replica: loading, chat template, DeepSpeed-inference, generation, label scoring. No Ray here."""

from engine.config import EngineConfig
from engine.engine import Engine
from engine.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedConfigError,
)
from engine.types import GenerationRequest, GenerationResult, LabelScores, SamplingParams, StreamDelta

__all__ = [
    "ContextLengthExceededError",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequestError",
    "LabelScores",
    "ModelNotFoundError",
    "SamplingParams",
    "StreamDelta",
    "UnsupportedConfigError",
]
