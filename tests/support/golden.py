"""Golden exposition files: compare, or rewrite with ``pytest --update-golden``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as PromCollector


class _Static(PromCollector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(families: Iterable[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(families))
    return generate_latest(registry).decode()


def check_golden(text: str, path: Path, update: bool) -> None:
    """Compare with the golden file; only an explicit update (``--update-golden`` or ``PAI_UPDATE_GOLDEN=1``)
    writes it. A missing golden file fails: a normal run never makes up its own expected result."""
    if update:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; write it with --update-golden and review it before committing"
    assert text == path.read_text(encoding="utf-8"), f"{path} differs; rerun with --update-golden if intended"
