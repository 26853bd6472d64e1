"""The roles and playbooks ship as the Ansible collection pai.monitoring: ``ansible-galaxy collection build`` makes a
tarball that holds what a user's controller needs and nothing of the developer's checkout, and a user who installs
it into an empty collections path runs ``ansible-playbook pai.monitoring.site``."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

import pai_monitoring

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".cache" / "molecule-venv" / "bin"
TIMEOUT_S = 300
MAX_TARBALL_BYTES = 2 * 1024 * 1024
ROLES = sorted(path.name for path in (REPO / "roles").iterdir() if path.is_dir())


def _tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run tests/hosts/setup.sh to create the molecule virtualenv")
    return path


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_HOME": str(home), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false"}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    argv = [str(_tool("ansible-galaxy")), "collection", "build", "--output-path", str(out), str(REPO)]
    result = subprocess.run(argv, env=_env(out / "home"), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("pai-monitoring-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def members(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as archive:
        return {member.name for member in archive.getmembers()}


def test_the_collection_carries_the_package_version(tarball: Path) -> None:
    with tarfile.open(tarball) as archive:
        manifest_file = archive.extractfile("MANIFEST.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
    assert manifest["collection_info"]["namespace"] == "pai"
    assert manifest["collection_info"]["name"] == "monitoring"
    assert manifest["collection_info"]["version"] == pai_monitoring.__version__
    assert tarball.name == f"pai-monitoring-{pai_monitoring.__version__}.tar.gz"


def test_the_tarball_holds_the_roles_playbooks_plugins_and_what_they_read(members: set[str]) -> None:
    wanted = {
        "meta/runtime.yml",
        "CHANGELOG.md",
        "README.md",
        *(f"roles/{role}/tasks/main.yml" for role in ROLES),
        *(f"playbooks/{path.name}" for path in (REPO / "playbooks").glob("*.yml")),
        *(f"plugins/filter/{path.name}" for path in (REPO / "plugins" / "filter").glob("*.py")),
        # read by role defaults through role_path: the rule files, the dashboards, the documents the units name
        "rules/alerts/gpu.rules.yml",
        *(f"dashboards/{path.name}" for path in (REPO / "dashboards").glob("*.json")),
        "docs/metrics.md",
        "docs/watchdog.md",
        "inventory.example/hosts.yml",
    }
    assert not wanted - members, sorted(wanted - members)


def test_the_tarball_leaves_the_checkout_out(members: set[str], tarball: Path) -> None:
    stray = sorted(
        name
        for name in members
        if re.match(r"(collectors|tests|molecule|sandbox|sim|bench|tools|\.cache|\.venv|\.git|\.ci)(/|$)", name)
        or "__pycache__" in name
        or name.endswith((".pyc", ".egg-info"))
        or "/filter_plugins" in name
    )
    assert not stray, stray
    assert tarball.stat().st_size < MAX_TARBALL_BYTES


def _filters_defined() -> set[str]:
    """Names of the filters the collection's plugins/filter/ modules register (read from their source)."""
    names: set[str] = set()
    for path in (REPO / "plugins" / "filter").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "filters":
                for returned in ast.walk(node):
                    if isinstance(returned, ast.Dict):
                        names |= {key.value for key in returned.keys if isinstance(key, ast.Constant)}
    return names


def test_every_filter_the_roles_use_is_the_collections() -> None:
    used: set[str] = set()
    for path in (REPO / "roles").rglob("*"):
        if path.suffix in (".yml", ".j2"):
            used |= set(re.findall(r"pai\.monitoring\.([a-z_]+)", path.read_text(encoding="utf-8")))
    assert used, "the roles use no filter of the collection"
    assert not used - _filters_defined(), sorted(used - _filters_defined())
    # a role's own filter_plugins/ is not loaded when the role runs from a collection
    assert not list((REPO / "roles").glob("*/filter_plugins"))


def test_a_user_runs_the_site_playbook_from_the_installed_collection(tarball: Path, tmp_path: Path) -> None:
    collections = tmp_path / "collections"
    install = [str(_tool("ansible-galaxy")), "collection", "install", "-p", str(collections), str(tarball)]
    result = subprocess.run(install, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    env = {**_env(tmp_path / "home"), "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_ROLES_PATH": ""}
    inventory = collections / "ansible_collections" / "pai" / "monitoring" / "inventory.example" / "hosts.yml"
    argv = [str(_tool("ansible-playbook")), "-i", str(inventory), "pai.monitoring.site", "--list-tasks"]
    # run from an empty directory: nothing of the checkout is in reach
    result = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    roles = set(re.findall(r"(pai\.monitoring\.[a-z_]+) : ", result.stdout))
    assert {f"pai.monitoring.{role}" for role in ("job_exporter", "watchdog", "node_exporter", "prometheus")} <= roles
    assert "pai.monitoring.exporter_base" in roles
    assert str(REPO) not in result.stdout


def test_galaxy_metadata_names_the_package_version() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    assert galaxy["version"] == pai_monitoring.__version__
    assert runtime["requires_ansible"].startswith(">=")
