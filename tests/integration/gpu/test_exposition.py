"""The GPU exposition: golden files per scenario and ``promtool check metrics``.

Regenerate the golden files with ``PAI_UPDATE_GOLDEN=1 pytest tests/integration/gpu/test_exposition.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.gpu.conftest import FIXTURES, MakeCollector, Scenario, render

pytestmark = pytest.mark.integration

PROMTOOL_TIMEOUT_SECONDS = 60
# Names the original job-exporter used, kept on purpose; promtool's lint dislikes their "_count" suffix.
KEPT_ORIGINAL_NAMES = ("configured_gpu_count", "nvidiasmi_ecc_error_count", "nvidiasmi_memory_leak_count")
SCENARIOS = ["eight", "mixed"]


def exposition(scenario: Scenario, make_collector: MakeCollector, name: str) -> str:
    scenario.write((FIXTURES / "scenarios" / f"{name}.conf").read_text())
    collector = make_collector(configured_count=8)
    collector.collect()  # the first pass records minor numbers of GPUs that get lost later
    return render(collector.collect())


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
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package")
    text = exposition(scenario, make_collector, name)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    unexpected = [line for line in findings if not line.startswith(KEPT_ORIGINAL_NAMES)]
    assert unexpected == []
    assert all('should not have "_count" suffix' in line for line in findings)
