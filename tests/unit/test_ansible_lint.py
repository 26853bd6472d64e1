"""The Ansible content passes yamllint and ``ansible-lint --profile production``.

Both linters live in the molecule virtualenv that ``tests/hosts/setup.sh`` creates (``.cache/molecule-venv``), apart
from the package's own environment; without it these tests fail and say how to create it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".cache" / "molecule-venv" / "bin"
LINT_TIMEOUT_SECONDS = 600


def _tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run tests/hosts/setup.sh to create the molecule virtualenv with the linters")
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "ANSIBLE_HOME": str(REPO / ".cache" / "ansible-home"),
    }
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=LINT_TIMEOUT_SECONDS, check=False
    )


def test_yamllint_is_clean() -> None:
    result = _run([str(_tool("yamllint")), "--strict", "--format", "parsable", "."])
    assert result.returncode == 0, f"yamllint found problems:\n{result.stdout}{result.stderr}"


def test_ansible_lint_production_profile_is_clean() -> None:
    result = _run([str(_tool("ansible-lint")), "--profile", "production", "--nocolor", "--offline"])
    assert result.returncode == 0, f"ansible-lint found problems:\n{result.stdout}\n{result.stderr[-4000:]}"
