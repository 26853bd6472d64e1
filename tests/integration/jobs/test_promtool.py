"""promtool accepts every golden exposition of the jobs and node_health collectors.

Its only complaints are the ``_count`` suffixes of names kept from the original job-exporter, which dashboards and
alert rules still query by those names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.promtool import promtool_findings
from tests.unit.jobs.helpers import GOLDEN, NAMES

pytestmark = pytest.mark.integration

NODE_HEALTH = Path(__file__).resolve().parents[2] / "fixtures" / "node_health" / "expected.prom"


@pytest.mark.parametrize("golden", [*(GOLDEN / f"{name}.prom" for name in NAMES), NODE_HEALTH], ids=lambda p: p.stem)
def test_promtool_check_metrics(golden: Path) -> None:
    assert promtool_findings(golden.read_text(encoding="ascii")) == []
