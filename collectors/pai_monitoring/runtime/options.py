"""Turning a collector's options dataclass into command-line flags and YAML keys, and back.

A field ``memory_leak_threshold_bytes`` of collector ``gpu`` is the flag ``--collector.gpu.memory-leak-threshold-bytes``
and the YAML key ``collectors.gpu.memory_leak_threshold_bytes``. The field's type says how a value is parsed.
"""

from __future__ import annotations

import dataclasses
import math
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


def _describe(value: object) -> str:
    return f"{value!r} (a {_YAML_TYPES.get(type(value), type(value).__name__)})"


_YAML_TYPES = {str: "string", bool: "boolean", int: "number", float: "number", list: "list", dict: "mapping"}


def _parse_bool(value: object, from_yaml: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_yaml:
        # YAML has booleans of its own: a quoted "no" is a string, and bool("no") would be True.
        raise ValueError(f"expected true or false, got {_describe(value)}")
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_tuple(value: object, from_yaml: bool) -> tuple[str, ...]:
    if isinstance(value, list | tuple) and from_yaml:
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        items = [v.strip() for v in value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        raise ValueError(f"expected a list or a comma-separated string, got {_describe(value)}")
    return tuple(v for v in items if v)


def _finite(number: float, value: object) -> float:
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


_YAML_NUMBER_HINT = " (YAML reads 1e9 and 1.0e9 as text: write 1000000000 or 1.0e+9)"


def _not_a_yaml_number(value: object, what: str) -> ValueError:
    hint = _YAML_NUMBER_HINT if isinstance(value, str) else ""
    return ValueError(f"expected {what}, got {_describe(value)}{hint}")


def _parse_int(value: object, from_yaml: bool) -> int:
    """Whole numbers; ``1e9`` on the command line is one (``1000000000``), ``1.5`` is not."""
    if isinstance(value, bool) or (from_yaml and not isinstance(value, int | float)):
        raise _not_a_yaml_number(value, "a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        number = value
    else:
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
    if not _finite(number, value).is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


def _parse_float(value: object, from_yaml: bool) -> float:
    if isinstance(value, bool) or (from_yaml and not isinstance(value, int | float)):
        raise _not_a_yaml_number(value, "a number")
    try:
        number = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    return _finite(number, value)


def _parse_str(value: object, from_yaml: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _parse_path(value: object, from_yaml: bool) -> Path:
    text = _parse_str(value, from_yaml)
    if not text.strip():
        raise ValueError("expected a path, got an empty string")
    return Path(text)


Parser = Callable[[object, bool], object]
"""Turns a value into an option's type; the flag says whether it came from YAML (typed) or a flag (a string)."""


def parser_for(tp: Any) -> Parser:
    """The function that turns a flag string or a YAML value into a value of type ``tp``."""
    base, optional = _strip_optional(tp)
    parse: Parser
    if base is bool:
        parse = _parse_bool
    elif base is int:
        parse = _parse_int
    elif base is float:
        parse = _parse_float
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

    def parse_optional(value: object, from_yaml: bool) -> object:
        if value is None or (not from_yaml and isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return parse(value, from_yaml)

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
            where, raw, from_yaml_file = flag_name(collector, name), from_flags[name], False
        elif name in from_yaml:
            where, raw, from_yaml_file = f"collectors.{collector}.{name}", from_yaml[name], True
        else:
            continue
        try:
            values[name] = parse(raw, from_yaml_file)
        except ValueError as exc:
            raise ConfigError(where, str(exc)) from None
    options = options_class(**values)  # type: ignore[arg-type]  # each value was parsed for its field's type
    try:
        options.validate()
    except ConfigError as exc:
        origin = exc.flag if exc.flag.startswith("-") else flag_name(collector, exc.flag)
        raise ConfigError(origin, exc.problem) from None
    return options
