"""promtool accepts every golden exposition of the jobs collector.

Its only complaints are the ``_count`` suffixes of two names kept from the original job-exporter, which dashboards
and alert rules still query by those names.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.unit.jobs.helpers import FIXTURES, SCENARIOS

pytestmark = pytest.mark.integration

KEPT_ORIGINAL_NAMES = ("gpu_used_by_external_process_count", "gpu_used_by_zombie_container_count")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_promtool_check_metrics(scenario: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed: apt-get install prometheus"
    text = (FIXTURES / scenario / "expected.prom").read_text(encoding="ascii")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert [p for p in problems if not p.startswith(KEPT_ORIGINAL_NAMES)] == []
