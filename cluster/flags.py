"""argparse flags generated from pydantic config models, so each knob is written once: on its field.

A field becomes `--field-name` (underscores to dashes) with the field's description as help, its default shown,
choices from a `Literal`, the type from the annotation (`int | None` takes '' or 'none' for None), bools as
`--x/--no-x`, lists comma-separated or repeated. Nested models become argument groups. A flag left out is left
out of the parsed config too (argparse's SUPPRESS), so the model's own default applies: the CLI never restates it.
`values()` turns the parsed flags back into the nested dict `Model.model_validate` takes; `validate()` names the
flag beside the field when a value is out of range.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

DEST_PREFIX = "config:"  # dests of config flags: argparse keeps them apart from the command's own flags
_REGISTRY_DEST = "_config_flags"


class ConfigError(ValueError):
    """A config that fails validation; the message names each field (and its flag, where it has one)."""


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], len(rest) < len(args)
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _converter(kind: type, nullable: bool) -> Callable[[str], Any]:
    """argparse `type=`: the field's scalar type; '' (and 'none' for non-strings) mean None where None is allowed."""

    def convert(text: str) -> Any:
        if nullable and (text == "" or (kind is not str and text.lower() == "none")):
            return None
        return kind(text)

    convert.__name__ = kind.__name__  # argparse's message: "invalid int value: 'x'"
    return convert


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _help(field: FieldInfo, nullable: bool) -> str:
    text = (field.description or "").replace("%", "%%")
    if field.is_required():
        suffix = "(required)"
    else:
        default = field.get_default(call_default_factory=True)
        suffix = f"(default: {_shown(default).replace('%', '%%')}"
        suffix += "; '' unsets it)" if nullable and default is not None else ")"
    return f"{text} {suffix}".strip()


class ConfigFlags:
    """The flags one (sub)parser takes from config models, and the way back from parsed args to config dicts.

    `names` renames a field's flag by its dotted path where the field name alone would be ambiguous or differ
    from the CLI's established name (e.g. {"engine.seed": "engine-seed"}); `positional` lists dotted paths taken
    as positional arguments; `verbatim` lists list fields whose values are not split on commas (stop strings).
    """

    def __init__(
        self,
        parser: argparse.ArgumentParser,
        names: Mapping[str, str] | None = None,
        positional: Collection[str] = (),
        verbatim: Collection[str] = (),
    ) -> None:
        self.parser = parser
        self.names = dict(names or {})
        self.positional = set(positional)
        self.verbatim = set(verbatim)
        self.flags: dict[tuple[str, ...], str] = {}  # field path -> its flag
        parser.set_defaults(**{_REGISTRY_DEST: self})

    @staticmethod
    def of(args: argparse.Namespace) -> ConfigFlags:
        """The ConfigFlags of the subcommand that parsed ``args``."""
        return getattr(args, _REGISTRY_DEST)

    def add(
        self,
        model: type[BaseModel],
        path: tuple[str, ...] = (),
        *,
        exclude: Collection[str] = (),
        choose: Mapping[str, type[BaseModel]] | None = None,
    ) -> None:
        """Add flags for ``model``'s fields, which sit at ``path`` in the config dict.

        ``exclude`` skips fields by dotted path; ``choose`` picks the model of a union field (a job's task).
        """
        choose = choose or {}
        target: Any = self.parser
        if path:
            doc = (model.__doc__ or "").strip().splitlines()
            target = self.parser.add_argument_group(".".join(path), doc[0] if doc else None)
        nested: list[tuple[type[BaseModel], tuple[str, ...]]] = []
        for name, field in model.model_fields.items():
            field_path = (*path, name)
            dotted = ".".join(field_path)
            if dotted in exclude:
                continue
            annotation, nullable = _unwrap_optional(field.annotation)
            if dotted in choose:
                nested.append((choose[dotted], field_path))
            elif _is_model(annotation):
                nested.append((annotation, field_path))
            elif get_origin(annotation) is Literal and len(get_args(annotation)) == 1:
                self.parser.set_defaults(**{DEST_PREFIX + dotted: get_args(annotation)[0]})  # a discriminator
            else:
                self._add_field(target, field, field_path, annotation, nullable)
        for sub_model, sub_path in nested:
            self.add(sub_model, sub_path, exclude=exclude, choose=choose)

    def _add_field(self, target: Any, field: FieldInfo, path: tuple[str, ...], annotation: Any, nullable: bool) -> None:
        dotted = ".".join(path)
        name = self.names.get(dotted, (field.alias or path[-1]).replace("_", "-"))  # the alias is the public name
        kw: dict[str, Any] = {"help": _help(field, nullable), "dest": DEST_PREFIX + dotted}
        origin = get_origin(annotation)
        if origin is Literal:
            choices = get_args(annotation)
            kw.update(choices=choices, type=_converter(type(choices[0]), nullable))
        elif annotation is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple) and get_args(annotation)[0] in (str, int, float):
            item = get_args(annotation)[0]
            if dotted in self.verbatim:
                kw.update(action="append", type=item, metavar=name.upper())
            else:
                kw.update(action="extend", type=lambda text, t=item: [t(v) for v in text.split(",")])
                kw["metavar"] = f"{name.upper()}[,...]"
        elif origin is dict:  # a JSON object: its text, or a .json file's path (the model's validator reads it)
            kw.update(type=str, metavar="FILE|JSON")
        elif annotation in (str, int, float):
            kw["type"] = _converter(annotation, nullable)
            kw["metavar"] = {int: "N", float: "NUM"}.get(annotation, name.upper().replace("-", "_"))
        else:
            raise TypeError(f"{dotted}: no flag for a field of type {annotation!r}")
        if dotted in self.positional:
            kw["metavar"] = name
            del kw["dest"]
            target.add_argument(DEST_PREFIX + dotted, **kw)
            self.flags[path] = name
            return
        option = f"--{name}"
        if option in self.flags.values():
            taken = next(".".join(p) for p, o in self.flags.items() if o == option)
            raise ValueError(f"{option} would set both {taken} and {dotted}: rename one in `names`")
        if field.is_required():
            kw["required"] = True
        target.add_argument(option, default=argparse.SUPPRESS, **kw)
        self.flags[path] = option

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The config flags given (and discriminators), as the nested dict `model_validate` takes."""
        out: dict[str, Any] = {}
        for dest, value in vars(args).items():
            if not dest.startswith(DEST_PREFIX):
                continue
            *parents, leaf = dest[len(DEST_PREFIX) :].split(".")
            node = out
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return out

    def field_for(self, loc: tuple[Any, ...]) -> tuple[tuple[str, ...], str] | None:
        """The field path and flag at a pydantic error location (which may carry union tags between fields)."""
        names = [x for x in loc if isinstance(x, str)]  # ints are list indices
        for path, option in self.flags.items():
            if names and path[0] == names[0] and path[-1] == names[-1] and _subsequence(path, names):
                return path, option
        return None

    def validate(self, model: type[BaseModel], data: dict[str, Any], path: tuple[str, ...] = ()) -> Any:
        """``model.model_validate(data)``; a ConfigError naming each bad field and its flag otherwise."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe(exc, path, self.field_for)) from exc


def _subsequence(short: tuple[str, ...], long: list[str]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def describe(
    exc: ValidationError,
    path: tuple[str, ...] = (),
    field_for: Callable[[tuple[Any, ...]], tuple[tuple[str, ...], str] | None] = lambda loc: None,
) -> str:
    """One part per error: `field.path (--flag): message`."""
    parts = []
    for error in exc.errors():
        loc = (*path, *error["loc"])
        found = field_for(loc)
        where = f"{'.'.join(found[0])} ({found[1]})" if found else ".".join(str(x) for x in loc) or "config"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def widen_max_to_min(section: dict[str, Any]) -> None:
    """``--min-replicas N`` alone means "at least N": the maximum follows (a config file must give both)."""
    if "min_replicas" in section and "max_replicas" not in section:
        section["max_replicas"] = max(section["min_replicas"], 1)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` laid over ``base`` key by key, nested dicts merged (flags over a config file)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
