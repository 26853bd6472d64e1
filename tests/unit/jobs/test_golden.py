"""Each fixture tree against its golden exposition (first cycle: counters and byte totals, no rates yet).

Rewrite the golden files after an intended change with ``pytest tests/unit/jobs --update-golden``, then review the
diff: it is the change a user of the metrics will see.
"""

from __future__ import annotations

import pytest

from tests.unit.jobs.helpers import FIXTURES, SCENARIOS, render, tree_collector


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_exposition_matches_golden_file(scenario: str, update_golden: bool) -> None:
    collector = tree_collector(FIXTURES / scenario / "tree")
    text = render(collector.collect())
    golden = FIXTURES / scenario / "expected.prom"
    if update_golden:
        golden.write_text(text, encoding="ascii")
    assert text == golden.read_text(encoding="ascii"), f"{golden} differs; rerun with --update-golden if intended"
