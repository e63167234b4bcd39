"""infra/azure parsed once per session (tests/infra/terraform.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.terraform import load_module


@pytest.fixture(scope="session")
def tf() -> dict[str, Any]:
    return load_module()
