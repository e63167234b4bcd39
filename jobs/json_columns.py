"""A JSON schema's fields as typed Arrow columns: what an extract job writes, one column per top-level property.

Types follow the schema, not the values a block happens to hold, so every shard of a job has the same columns:
string (and string enums) → string, integer → int64, number → float64, boolean → bool, array → list of its items'
type, object → struct of its properties, a nullable type (``["string", "null"]``) → that type, nullable. What has
no single Arrow type (``anyOf`` of different types, an object without ``properties``, a bare ``{}``) is the value's
JSON text, in a ``large_string`` column (so a reader can tell ``"1"`` from ``1``: every value there is JSON), and
nothing is dropped.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

JSON_TEXT = pa.large_string()  # a value with no single Arrow type, kept as its JSON text (told apart by the type)

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        found = {_json_type(v) for v in values} - {"null"}
        return sorted(found) if len(found) == 1 else []
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def arrow_type(schema: Any) -> pa.DataType:
    """The Arrow type of values valid under ``schema`` (JSON text when there is no single one)."""
    if not isinstance(schema, dict):
        return JSON_TEXT
    kinds = [k for k in _types(schema) if k != "null"]
    if sorted(kinds) == ["integer", "number"]:
        return pa.float64()
    if len(kinds) != 1:
        return JSON_TEXT
    kind = kinds[0]
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        return pa.list_(arrow_type(items)) if isinstance(items, dict) else pa.list_(JSON_TEXT)
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            return JSON_TEXT
        return pa.struct([pa.field(name, arrow_type(sub)) for name, sub in props.items()])
    return JSON_TEXT


def arrow_value(value: Any, typ: pa.DataType) -> Any:
    """``value`` shaped for ``typ``: JSON text where the type is, recursively; integers as floats for float64."""
    if value is None:
        return None
    if typ == JSON_TEXT:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    if pa.types.is_floating(typ) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if pa.types.is_list(typ):
        return [arrow_value(v, typ.value_type) for v in value]
    if pa.types.is_struct(typ):
        return {f.name: arrow_value(value.get(f.name), f.type) for f in typ}
    return value


def property_fields(schema: dict[str, Any]) -> list[pa.Field]:
    """One field per top-level property of an object schema, in the schema's order."""
    props = schema.get("properties")
    if schema.get("type", "object") != "object" or not isinstance(props, dict) or not props:
        raise ValueError("the schema must be an object schema with at least one entry in 'properties'")
    return [pa.field(name, arrow_type(sub)) for name, sub in props.items()]


def choices(schema: Any) -> list[Any] | None:
    """The values a top-level field can take when they are few and known: a string enum, or a boolean."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return None  # one value: nothing to choose
    if "enum" in schema:
        values = list(dict.fromkeys(v for v in schema["enum"] if isinstance(v, str | bool)))
        same_kind = all(isinstance(v, str) for v in values) or all(isinstance(v, bool) for v in values)
        return values if len(values) == len(schema["enum"]) >= 2 and same_kind else None
    if _types(schema) == ["boolean"]:
        return [True, False]
    return None
