"""API keys: `Authorization: Bearer <key>`, compared in constant time; keys are never logged.

The scheme is case-insensitive (RFC 7235: `bearer`, `BEARER`) and whitespace around and after it is tolerated, as
clients and proxies vary. Keys are compared as SHA-256 digests, against every configured key every time, so neither
the time taken nor a length mismatch says anything about which key nearly matched.
"""

from __future__ import annotations

import hashlib
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


def bearer_token(header: str | None) -> str | None:
    """The credentials of a `Bearer` Authorization header (any case, any whitespace), else None."""
    parts = (header or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() or None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def authorized(header: str | None, keys: tuple[str, ...]) -> bool:
    if not keys:
        return True
    given = bearer_token(header)
    if given is None:
        return False
    digest = _digest(given)
    # Compare against every key, always, so the time taken says nothing about which key nearly matched.
    return bool(sum(hmac.compare_digest(digest, _digest(k)) for k in keys))
