"""Ansible filters that tune the suite's shipped Prometheus rule files without editing them.

The prometheus role reads each shipped rule file on the controller, applies the site's
``prometheus_alert_overrides`` and writes the result to the host, where ``promtool check rules``
validates it before it lands.

An override is keyed by alert name and may set ``expr``, ``for``, ``keep_firing_for``, ``severity`` (the
``severity`` label), ``labels`` and ``annotations`` (merged into the shipped ones), or ``enabled: false`` to drop
the alert.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

OVERRIDE_KEYS = frozenset({"expr", "for", "keep_firing_for", "severity", "labels", "annotations", "enabled"})
_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")


class RuleFileError(ValueError):
    """A rule file or an override that cannot be applied; the message says what to fix."""


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (long PromQL expressions) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _load(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleFileError(f"rule file is not valid YAML: {exc}") from exc


def is_rule_file(text: str) -> bool:
    """True when ``text`` is a Prometheus rule file (a mapping with a ``groups`` list)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and isinstance(data.get("groups"), list)


def _alert_rules(data: Any) -> Iterable[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise RuleFileError("rule file has no 'groups' list")
    for group in data["groups"]:
        if not isinstance(group, dict):
            raise RuleFileError("every entry of 'groups' must be a mapping")
        for rule in group.get("rules") or []:
            if isinstance(rule, dict) and "alert" in rule:
                yield rule


def alert_names(texts: Iterable[str]) -> list[str]:
    """Sorted, unique alert names defined in the given rule files."""
    return sorted({str(rule["alert"]) for text in texts for rule in _alert_rules(_load(text))})


def unknown_overrides(texts: Iterable[str], overrides: Mapping[str, Any]) -> list[str]:
    """Names in ``overrides`` that no rule file defines (a typo the operator must fix)."""
    known = set(alert_names(texts))
    return sorted(name for name in overrides if name not in known)


def _plain(value: Any) -> Any:
    """``value`` with Ansible's tagged str/dict/list subclasses turned into plain ones, which YAML can dump."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_override(name: str, override: Any) -> Mapping[str, Any]:
    where = f"prometheus_alert_overrides[{name!r}]"
    override = _plain(override)
    if not isinstance(override, Mapping):
        raise RuleFileError(f"{where} must be a mapping, got {type(override).__name__}")
    unknown = sorted(set(override) - OVERRIDE_KEYS)
    if unknown:
        raise RuleFileError(f"{where} has unknown keys {unknown}; allowed: {sorted(OVERRIDE_KEYS)}")
    if "enabled" in override and not isinstance(override["enabled"], bool):
        raise RuleFileError(f"{where}.enabled must be true or false")
    for key in ("for", "keep_firing_for"):
        if key in override and not _DURATION.match(str(override[key])):
            duration = override[key]
            raise RuleFileError(f"{where}.{key} must be a Prometheus duration such as 5m or 1h30m, got {duration!r}")
    for key in ("expr", "severity"):
        if key in override and (not isinstance(override[key], str) or not override[key].strip()):
            raise RuleFileError(f"{where}.{key} must be a non-empty string")
    for key in ("labels", "annotations"):
        if key in override and not isinstance(override[key], Mapping):
            raise RuleFileError(f"{where}.{key} must be a mapping")
    return override


def _tuned(rule: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    tuned = dict(rule)
    if "expr" in override:
        tuned["expr"] = override["expr"]
    for key in ("for", "keep_firing_for"):
        if key in override:
            tuned[key] = str(override[key])
    labels = dict(tuned.get("labels") or {})
    labels.update({str(k): str(v) for k, v in (override.get("labels") or {}).items()})
    if "severity" in override:
        labels["severity"] = override["severity"]
    if labels:
        tuned["labels"] = labels
    if "annotations" in override:
        annotations = dict(tuned.get("annotations") or {})
        annotations.update({str(k): str(v) for k, v in override["annotations"].items()})
        tuned["annotations"] = annotations
    return tuned


def apply_overrides(text: str, overrides: Mapping[str, Any] | None) -> str:
    """Return the rule file ``text`` with ``overrides`` applied, as YAML.

    A file that no override touches comes back unchanged, comments included. Otherwise alerts that no override
    names keep their content and key order (comments are lost in the round trip). A group left
    without rules by ``enabled: false`` is dropped, because an empty group only adds noise to /api/v1/rules.
    """
    checked = {str(name): _check_override(str(name), value) for name, value in (overrides or {}).items()}
    data = _load(text)
    if not any(str(rule["alert"]) in checked for rule in _alert_rules(data)):
        return text  # nothing to change: ship the file as written, comments included
    groups = []
    for group in data["groups"]:
        rules = []
        for rule in group.get("rules") or []:
            override = checked.get(str(rule.get("alert"))) if isinstance(rule, dict) and "alert" in rule else None
            if override is None:
                rules.append(rule)
            elif override.get("enabled", True):
                rules.append(_tuned(rule, override))
        if rules or not group.get("rules"):
            groups.append({**group, "rules": rules})
    data["groups"] = groups
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=4096)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleFileError(f"cannot read rule file {path}: {exc}") from exc


def select_rule_files(paths: Iterable[str]) -> list[str]:
    """Of the controller paths given, the ones that hold rule files, sorted (test suites and the like drop out)."""
    return sorted(path for path in paths if is_rule_file(_read(path)))


def find_rule_files(base_dir: str, skip_dirs: Iterable[str] = ("tests", "test")) -> list[str]:
    """Rule files directly in ``base_dir`` or one directory below it (``alerts/``, ``recording/``), sorted.

    Directories named in ``skip_dirs`` (promtool test suites) are not searched; YAML files that are not rule files
    (such as ``alertmanager.defaults.yml``) are left out by their content.
    """
    base = Path(base_dir)
    if not base.is_dir():
        return []
    candidates = [p for p in base.glob("*") if p.is_file()]
    candidates += [p for d in base.glob("*") if d.is_dir() and d.name not in set(skip_dirs) for p in d.glob("*")]
    return select_rule_files(str(p) for p in candidates if p.is_file() and p.suffix in (".yml", ".yaml"))


def unknown_overrides_in(paths: Iterable[str], overrides: Mapping[str, Any] | None) -> list[str]:
    """``unknown_overrides`` for rule files given by controller path."""
    return unknown_overrides([_read(path) for path in paths], overrides or {})


def render_rule_file(path: str, overrides: Mapping[str, Any] | None) -> str:
    """``apply_overrides`` for a rule file given by controller path; the error names the file."""
    try:
        return apply_overrides(_read(path), overrides)
    except RuleFileError as exc:
        raise RuleFileError(f"{path}: {exc}") from exc


def dest_name(path: str, base_dir: str | None = None) -> str:
    """File name of a rule file on the host: its path below ``base_dir`` with '/' as '-', ending in ``.yml``.

    ``alerts/gpu.rules.yml`` and ``recording/gpu.rules.yml`` thus land side by side without clashing, and every file
    matches the ``*.yml`` globs of prometheus.yml.
    """
    source = Path(path)
    relative = source.resolve().relative_to(Path(base_dir).resolve()) if base_dir else Path(source.name)
    name = "-".join(relative.parts)
    if name.endswith(".yaml"):
        return name.removesuffix(".yaml") + ".yml"
    return name if name.endswith(".yml") else name + ".yml"


class FilterModule:
    """Filters of the prometheus role (pai.monitoring.<name> in templates: the collection's plugins/filter/)."""

    def filters(self) -> dict[str, Any]:
        return {
            "rules_select": select_rule_files,
            "rules_find": find_rule_files,
            "rules_unknown_overrides": unknown_overrides_in,
            "rules_render": render_rule_file,
            "rules_dest_name": dest_name,
        }
