"""Each fixture tree against its golden exposition (first cycle: counters and byte totals, no rates yet).

Rewrite the golden files after an intended change with ``pytest tests/unit/jobs --update-golden``, then review the
diff: it is the change a user of the metrics will see. A missing golden file fails; only the flag writes one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.jobs.generate import Owners
from tests.unit.jobs.helpers import GOLDEN, NAMES, render, tree_collector


@pytest.mark.parametrize("scenario", NAMES)
def test_exposition_matches_golden_file(
    scenario: str, trees: dict[str, tuple[Path, Owners]], update_golden: bool
) -> None:
    tree, _ = trees[scenario]
    text = render(tree_collector(tree).collect())
    golden = GOLDEN / f"{scenario}.prom"
    if update_golden:
        golden.write_text(text, encoding="ascii")
    assert golden.exists(), f"{golden} is missing; write it with --update-golden and review it"
    assert text == golden.read_text(encoding="ascii"), f"{golden} differs; rerun with --update-golden if intended"
