"""One Phi-4 replica: loading, chat template, DeepSpeed-inference, generation, label scoring. No Ray here."""

from phifleet.engine.config import EngineConfig
from phifleet.engine.engine import Engine
from phifleet.engine.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedConfigError,
)
from phifleet.engine.types import GenerationRequest, GenerationResult, LabelScores, SamplingParams, StreamDelta

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
