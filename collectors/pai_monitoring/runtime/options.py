"""Turning a collector's options dataclass into command-line flags and YAML keys, and back.

A field ``memory_leak_threshold_bytes`` of collector ``gpu`` is the flag ``--collector.gpu.memory-leak-threshold-bytes``
and the YAML key ``collectors.gpu.memory_leak_threshold_bytes``. The field's type says how a value is parsed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pai_monitoring.runtime.collector import CollectorOptions
from pai_monitoring.runtime.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def flag_name(collector: str, field_name: str) -> str:
    return f"--collector.{collector}.{field_name.replace('_', '-')}"


def dest_name(collector: str, field_name: str) -> str:
    return f"collector__{collector}__{field_name}"


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
        raise TypeError(f"unsupported option type {tp}")
    return tp, False


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        raise ValueError(f"expected a list or a comma-separated string, got {value!r}")
    return tuple(v for v in items if v)


def _parse_number(kind: type[int] | type[float]) -> Callable[[object], int | float]:
    def parse(value: object) -> int | float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            return kind(value) if isinstance(value, int | float) else kind(str(value).strip())
        except (TypeError, ValueError):
            raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}") from None

    return parse


def _parse_str(value: object) -> str:
    if isinstance(value, dict | list):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _parse_path(value: object) -> Path:
    return Path(_parse_str(value))


def parser_for(tp: Any) -> Callable[[object], object]:
    """The function that turns a flag string or a YAML value into a value of type ``tp``."""
    base, optional = _strip_optional(tp)
    parse: Callable[[object], object]
    if base is bool:
        parse = _parse_bool
    elif base is int or base is float:
        parse = _parse_number(base)
    elif base is str:
        parse = _parse_str
    elif base is Path:
        parse = _parse_path
    elif typing.get_origin(base) is tuple:
        parse = _parse_tuple
    else:
        raise TypeError(f"unsupported option type {tp}")
    if not optional:
        return parse

    def parse_optional(value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return parse(value)

    return parse_optional


def option_fields(options_class: type[CollectorOptions]) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The dataclass fields of an options class with their resolved types."""
    hints = typing.get_type_hints(options_class)
    return [(f, hints[f.name]) for f in dataclasses.fields(options_class)]


def build_options(
    collector: str,
    options_class: type[CollectorOptions],
    from_flags: Mapping[str, object],
    from_yaml: Mapping[str, object],
) -> CollectorOptions:
    """Options of one collector: flag values win over YAML values, which win over defaults; then validated."""
    known = {f.name: tp for f, tp in option_fields(options_class)}
    for key in from_yaml:
        if key not in known and key != "enabled":
            raise ConfigError(f"collectors.{collector}.{key}", "unknown option")
    values: dict[str, object] = {}
    for name, tp in known.items():
        parse = parser_for(tp)
        if name in from_flags and from_flags[name] is not None:
            where, raw = flag_name(collector, name), from_flags[name]
        elif name in from_yaml:
            where, raw = f"collectors.{collector}.{name}", from_yaml[name]
        else:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
    options = options_class(**values)  # type: ignore[arg-type]  # each value was parsed for its field's type
    try:
        options.validate()
    except ConfigError as exc:
        origin = exc.flag if exc.flag.startswith("-") else flag_name(collector, exc.flag)
        raise ConfigError(origin, exc.problem) from None
    return options
