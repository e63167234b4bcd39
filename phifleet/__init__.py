"""phifleet: Microsoft Phi-4 at scale — batch inference on Ray Data, OpenAI-compatible serving on Ray Serve.

The one import root. The repository keeps a folder per layer (``engine/``, ``protocol/``, ``jobs/``,
``serve/``, ``cluster/``, ``helm/``); the package mapping in pyproject.toml installs them as
``phifleet.engine``, ``phifleet.protocol``, … so nothing generic lands in site-packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("phifleet")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
