"""Render what the roles write without a host: one local ``ansible-playbook`` run of a render playbook (its tasks
render the roles' own templates with the roles' vars), over an inventory whose lowest layer is the roles' defaults.
Ansible comes from the molecule virtualenv (``tests/hosts/setup.sh --venv-only``, which ``make check`` runs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".cache" / "molecule-venv" / "bin"
TIMEOUT_S = 300


def role_defaults(*roles: str) -> dict[str, Any]:
    """The roles' defaults/main.yml merged, without those that refer to role_path (which only a role has)."""
    merged: dict[str, Any] = {}
    for role in roles:
        merged.update(yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8")))
    return {name: value for name, value in merged.items() if "role_path" not in str(value)}


def render(playbook: Path, inventory: dict[str, Any], work: Path) -> dict[str, dict[str, str]]:
    """Run ``playbook`` (given ``repo`` and ``out``) over ``inventory``; the rendered files it wrote to
    ``out/rendered.json``, by host and file name."""
    ansible_playbook = VENV_BIN / "ansible-playbook"
    if not ansible_playbook.is_file():
        pytest.fail(f"{ansible_playbook} is missing: run tests/hosts/setup.sh to create the molecule virtualenv")
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    env = {
        **os.environ,
        # the checkout as the collection pai.monitoring, whose filters the roles use (tests/hosts/setup.sh links it)
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
        "ANSIBLE_HOME": str(REPO / ".cache" / "ansible-home"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python"),
        "NO_COLOR": "1",
    }
    argv = [str(ansible_playbook), "-i", str(work / "inventory.yml"), str(playbook)]
    argv += ["-e", f"repo={REPO}", "-e", f"out={work}"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    documents: dict[str, dict[str, str]] = json.loads((work / "rendered.json").read_text(encoding="utf-8"))
    return documents
