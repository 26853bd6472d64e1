"""Every role's public interface is typed: defaults/main.yml and meta/argument_specs.yml name the same variables,
with the same defaults, and each variable's default fits its declared type and choices. A required option (the
shared exporter_base role's input) has no default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = sorted(path.name for path in ROLES_DIR.iterdir() if path.is_dir()) if ROLES_DIR.is_dir() else []

# argument_specs type -> the Python types a YAML default of that type may load as
SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "raw": (object,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def _load(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROLES_DIR.parent)} is missing"
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _interface(role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    defaults = _load(ROLES_DIR / role / "defaults" / "main.yml")
    specs = _load(ROLES_DIR / role / "meta" / "argument_specs.yml")
    options = specs.get("argument_specs", {}).get("main", {}).get("options", {})
    return defaults, options


def test_there_are_roles() -> None:
    assert ROLES, f"no role directories under {ROLES_DIR}"


@pytest.mark.parametrize("role", ROLES)
def test_specs_and_defaults_name_the_same_variables(role: str) -> None:
    defaults, options = _interface(role)
    only_defaults = sorted(set(defaults) - set(options))
    required = {name for name, spec in options.items() if spec.get("required")}
    only_specs = sorted(set(options) - set(defaults) - required)
    assert not only_defaults, f"{role}: in defaults/main.yml but not typed in meta/argument_specs.yml: {only_defaults}"
    assert not only_specs, f"{role}: in meta/argument_specs.yml but without a default: {only_specs}"


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_prefix(role: str) -> None:
    defaults, _ = _interface(role)
    stray = sorted(name for name in defaults if not name.startswith(f"{role}_"))
    assert not stray, f"{role}: public variables must start with '{role}_': {stray}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_role_defaults(role: str) -> None:
    defaults, options = _interface(role)
    differ = {
        name: (options[name].get("default"), value)
        for name, value in defaults.items()
        if name in options and options[name].get("default") != value
    }
    assert not differ, f"{role}: argument_specs default differs from defaults/main.yml (spec, default): {differ}"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_typed_and_described(role: str) -> None:
    _, options = _interface(role)
    problems = []
    for name, spec in options.items():
        kind = spec.get("type", "str")
        if "type" not in spec or kind not in SPEC_TYPES:
            problems.append(f"{name}: type missing or unknown ({spec.get('type')!r})")
        if not spec.get("description"):
            problems.append(f"{name}: no description")
        if kind == "list" and "elements" not in spec:
            problems.append(f"{name}: list without elements")
    assert not problems, f"{role}: " + "; ".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_fit_their_types_and_choices(role: str) -> None:
    defaults, options = _interface(role)
    problems = []
    for name, value in defaults.items():
        spec = options.get(name)
        if spec is None:
            continue
        kind = spec.get("type", "str")
        allowed = SPEC_TYPES.get(kind, (object,))
        if kind in ("int", "float") and isinstance(value, bool):
            problems.append(f"{name}: {value!r} is a bool, declared {kind}")
        elif not isinstance(value, allowed):
            problems.append(f"{name}: {value!r} is {type(value).__name__}, declared {kind}")
        if "choices" in spec and value not in spec["choices"]:
            problems.append(f"{name}: {value!r} not in choices {spec['choices']}")
        element = spec.get("elements")
        if kind == "list" and element in SPEC_TYPES and isinstance(value, list):
            wrong = [item for item in value if not isinstance(item, SPEC_TYPES[element])]
            if wrong:
                problems.append(f"{name}: elements {wrong!r} are not {element}")
    assert not problems, f"{role}: " + "; ".join(problems)
