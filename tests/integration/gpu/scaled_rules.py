"""The shipped GPU rules with every duration divided by a factor, so that a real Prometheus moves them in seconds.

``for``, ``keep_firing_for`` and the range selectors of the expressions (``[5m]``, ``[1d]``) are scaled; nothing
else changes, so the expressions, labels and templates under test are the shipped ones. ``promtool check rules``
validates the result before a test uses it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
GPU_RULE_FILES = (REPO / "rules" / "alerts" / "gpu.rules.yml", REPO / "rules" / "recording" / "gpu.rules.yml")
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d))+)\]")


def duration_ms(text: str) -> int:
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * UNITS_MS[u] for n, u in parts)


def scaled(text: str, factor: float) -> str:
    """A duration divided by ``factor``, in milliseconds (at least 1 ms unless it was 0)."""
    ms = duration_ms(text)
    return f"{max(1, round(ms / factor)) if ms else 0}ms"


def scale_rule(rule: dict[str, Any], factor: float) -> dict[str, Any]:
    out = dict(rule)
    for key in ("for", "keep_firing_for"):
        if key in out:
            out[key] = scaled(str(out[key]), factor)
    out["expr"] = _RANGE.sub(lambda m: f"[{scaled(m.group(1), factor)}]", str(out["expr"]))
    return out


def write_scaled_rules(directory: Path, factor: float) -> list[Path]:
    """The GPU alert and recording rules, scaled, written into ``directory`` and checked with promtool."""
    written = []
    for source in GPU_RULE_FILES:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        for group in data["groups"]:
            group["rules"] = [scale_rule(rule, factor) for rule in group["rules"]]
        target = directory / f"{source.parent.name}-{source.name}"
        target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        written.append(target)
    subprocess.run(["promtool", "check", "rules", *map(str, written)], check=True, capture_output=True, timeout=60)
    return written
