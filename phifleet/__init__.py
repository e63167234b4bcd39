"""phifleet: Microsoft Phi-4 at scale — batch inference on Ray Data, OpenAI-compatible serving on Ray Serve.

The one import root. The repository keeps a folder per layer (``engine/``, ``protocol/``, ``jobs/``,
``serve/``, ``cluster/``, ``helm/``); the package mapping in pyproject.toml installs them as
``phifleet.engine``, ``phifleet.protocol``, … so nothing generic lands in site-packages.

The Python API on Ray Datasets (``phifleet.label``, ``generate``, ``extract``, ``batch``, from
``phifleet.jobs.api``) and the configs it takes load on first use: ``import phifleet`` stays free of Ray,
torch and transformers.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phifleet.engine.config import EngineConfig
    from phifleet.jobs.api import batch, extract, generate, label
    from phifleet.jobs.config import PoolConfig

try:
    __version__ = version("phifleet")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_HOMES = {
    "label": "phifleet.jobs.api",
    "generate": "phifleet.jobs.api",
    "extract": "phifleet.jobs.api",
    "batch": "phifleet.jobs.api",
    "EngineConfig": "phifleet.engine.config",
    "PoolConfig": "phifleet.jobs.config",
}
__all__ = ["EngineConfig", "PoolConfig", "__version__", "batch", "extract", "generate", "label"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
