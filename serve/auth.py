"""API keys: `Authorization: Bearer <key>`, compared in constant time; keys are never logged."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def load_api_keys(env_var: str, file: str | None) -> tuple[str, ...]:
    keys = [k.strip() for k in os.environ.get(env_var, "").split(",")]
    if file:
        keys += [line.strip() for line in Path(file).read_text().splitlines()]
    keys = [k for k in keys if k]
    if not keys:
        log.warning(
            "no API keys configured (%s / auth.api_keys_file): the endpoint is open to anyone who reaches it", env_var
        )
    return tuple(keys)


def authorized(header: str | None, keys: tuple[str, ...]) -> bool:
    if not keys:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].encode()
    # Compare against every key, always, so the time taken says nothing about which key nearly matched.
    return bool(sum(hmac.compare_digest(given, k.encode()) for k in keys))
