"""Fixture trees of every scenario, built once per test session from ``tests/fixtures/jobs/generate.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.jobs.generate import Owners
from tests.unit.jobs.helpers import NAMES, make_tree


@pytest.fixture(scope="session")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Owners]]:
    """Scenario name -> (tree, which job each GPU process belongs to). Read-only: tests that change a tree build
    their own with ``make_tree``."""
    root = tmp_path_factory.mktemp("jobs-trees")
    return {name: make_tree(name, root) for name in NAMES}
