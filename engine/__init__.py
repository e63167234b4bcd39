"""One Phi-4 replica: loading, chat template, DeepSpeed-inference, generation, label scoring. No Ray here.

The names below load on first use: the CLI, the protocol models and the Helm-schema generator import the
config and error types without paying for torch and transformers (seconds) until an engine is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "Engine": "engine",
    "EngineConfig": "config",
    "ContextLengthExceededError": "errors",
    "EngineError": "errors",
    "InvalidRequestError": "errors",
    "ModelNotFoundError": "errors",
    "UnsupportedConfigError": "errors",
    "GenerationRequest": "types",
    "GenerationResult": "types",
    "LabelScores": "types",
    "SamplingParams": "types",
    "StreamDelta": "types",
}
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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
