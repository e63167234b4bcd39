"""The README's serving tables, rendered from the code they describe so the two cannot drift.

- the parameter support table: `protocol.requests.PARAMETERS` (what is implemented, what is refused and why);
- the limits table: the `http` limits of ServeConfig and `RequestLimits` (`limits`), with their defaults.

`python -m phifleet.cluster.readme_tables [README.md]` rewrites them between their markers; a test fails when the
committed README differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel

from phifleet.protocol.limits import RequestLimits
from phifleet.protocol.requests import parameter_table_markdown
from phifleet.serve.config import HttpConfig

#: The HttpConfig fields that bound one request (the others say how the endpoint answers).
HTTP_LIMITS = (
    "max_request_body_bytes",
    "max_header_bytes",
    "body_read_timeout_s",
    "keep_alive_timeout_s",
    "max_open_requests",
)


def _rows(prefix: str, model: type[BaseModel], names: tuple[str, ...] | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if names is None or name in names:
            description = (field.description or "").replace("|", "\\|")  # a pipe would end the table cell
            rows.append(f"| `{prefix}.{name}` | `{json.dumps(field.default)}` | {description} |")
    return rows


def limits_table_markdown() -> str:
    head = ["| setting | default | what it bounds |", "|---|---|---|"]
    return "\n".join(head + _rows("http", HttpConfig, HTTP_LIMITS) + _rows("limits", RequestLimits))


TABLES = {"serve-limits": limits_table_markdown, "serve-parameters": parameter_table_markdown}


def render(readme: str) -> str:
    for name, table in TABLES.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        before, _, rest = readme.partition(start)
        _, found, after = rest.partition(end)
        if not found:
            raise ValueError(f"README has no {start} ... {end} markers")
        readme = f"{before}{start}\n{table().strip()}\n{end}{after}"
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("readme", nargs="?", type=Path, default=Path("README.md"))
    path = parser.parse_args().readme
    path.write_text(render(path.read_text()))


if __name__ == "__main__":
    main()
