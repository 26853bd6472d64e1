"""promtool accepts every golden exposition of the jobs collector.

Its only complaints are the ``_count`` suffixes of two names kept from the original job-exporter, which dashboards
and alert rules still query by those names.
"""

from __future__ import annotations

import pytest

from tests.support.promtool import promtool_findings
from tests.unit.jobs.helpers import FIXTURES, SCENARIOS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_promtool_check_metrics(scenario: str) -> None:
    text = (FIXTURES / scenario / "expected.prom").read_text(encoding="ascii")
    assert promtool_findings(text) == []
