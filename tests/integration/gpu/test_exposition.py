"""The GPU exposition: golden files per scenario and ``promtool check metrics``.

Regenerate the golden files with ``PAI_UPDATE_GOLDEN=1 pytest tests/integration/gpu/test_exposition.py``.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.gpu.conftest import FIXTURES, MakeCollector, Scenario, collect_paced, render
from tests.support.promtool import promtool_findings

pytestmark = pytest.mark.integration

SCENARIOS = ["eight", "mixed", "hopper"]


def exposition(scenario: Scenario, make_collector: MakeCollector, name: str) -> str:
    scenario.write((FIXTURES / "scenarios" / f"{name}.conf").read_text())
    collector = make_collector(configured_count=8, clock=lambda: 1_700_000_000.0)  # a fixed "last success"
    collect_paced(collector)  # the first pass records minor numbers of GPUs lost later and takes GPM's first sample
    return render(collect_paced(collector))


@pytest.mark.parametrize("name", SCENARIOS)
def test_exposition_matches_the_golden_file(scenario: Scenario, make_collector: MakeCollector, name: str) -> None:
    text = exposition(scenario, make_collector, name)
    golden = FIXTURES / "golden" / f"{name}.prom"
    if os.environ.get("PAI_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("name", SCENARIOS)
def test_promtool_finds_nothing_but_the_kept_original_names(
    scenario: Scenario, make_collector: MakeCollector, name: str
) -> None:
    assert promtool_findings(exposition(scenario, make_collector, name)) == []
