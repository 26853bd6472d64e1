"""Metric specs: valid, unique, documented, and docs/metrics.md generated from them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from pai_monitoring import metrics_doc
from pai_monitoring.runtime.metrics import MetricSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_docs_metrics_md_is_generated_from_the_code() -> None:
    assert DOC.read_text(encoding="utf-8") == metrics_doc.render(), "docs/metrics.md is stale: run `make docs`"


def test_no_two_collectors_of_a_daemon_define_the_same_metric() -> None:
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for daemon, collector, spec in metrics_doc.all_specs():
        owners[(daemon, spec.name)].add(collector)
    clashes = {name: who for name, who in owners.items() if len(who) > 1}
    assert not clashes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bad-name", "gauge", "h"), "invalid metric name"),
        (("x_seconds", "counter", "h"), "must end in _total"),
        (("x", "gauge", " "), "no help"),
        (("x", "gauge", "h", ("__reserved",)), "invalid label"),
    ],
)
def test_invalid_specs_are_refused(args: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        MetricSpec(*args)


def test_family_types() -> None:
    spec = MetricSpec("pai_x_total", "counter", "h", ("a",))
    fam = spec.family()
    fam.add_metric(["1"], 2.0)
    assert fam.type == "counter"
    assert [s.name for s in fam.samples] == ["pai_x_total"]
    with pytest.raises(TypeError):
        spec.gauge()
