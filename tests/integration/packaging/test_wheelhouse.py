"""``make wheelhouse`` (tools/wheelhouse.sh) builds the wheels for the hosts' Python, not the controller's: for each
target CPython (Debian 12's 3.11, Debian 13's 3.13) pip resolves each daemon's install from the wheelhouse alone
(--no-index), with binary wheels made for that Python, and a daemon gets only what its collectors import.

Needs the package index (PyPI) to download the dependency wheels, as the make target does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[3]
TARGETS = ("3.11", "3.13")
PLATFORMS = ["manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
TIMEOUT_S = 600

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    argv = [str(REPO / "tools" / "wheelhouse.sh"), "-o", str(out)]
    for version in TARGETS:
        argv += ["-p", version]
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return out


def _target_tags(version: str) -> set[Tag]:
    python = tuple(int(part) for part in version.split("."))
    return set(cpython_tags(python, platforms=PLATFORMS)) | set(compatible_tags(python, platforms=PLATFORMS))


def _resolve(wheelhouse: Path, version: str, requirement: str, work: Path) -> dict[str, str]:
    """What pip installs for ``requirement`` on a host of CPython ``version`` from the wheelhouse alone: name to
    the wheel file it takes."""
    report = work / f"report-{version}-{requirement}.json"
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run", "--ignore-installed",
            "--no-index", "--find-links", str(wheelhouse), "--only-binary=:all:", "--python-version", version,
            "--implementation", "cp", "--abi", "cp" + version.replace(".", ""), "--abi", "abi3", "--abi", "none",
            "--target", str(work / "target"), "--report", str(report), "--quiet"]  # fmt: skip
    for platform in PLATFORMS:
        argv += ["--platform", platform]
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}
    result = subprocess.run([*argv, requirement], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    installs: list[dict[str, Any]] = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {canonicalize_name(item["metadata"]["name"]): item["download_info"]["url"] for item in installs}


@pytest.mark.parametrize("version", TARGETS)
def test_each_daemon_installs_offline_with_wheels_for_the_hosts_python(
    wheelhouse: Path, version: str, tmp_path: Path
) -> None:
    gpu = _resolve(wheelhouse, version, "pai-monitoring[gpu]", tmp_path)
    watchdog = _resolve(wheelhouse, version, "pai-monitoring[watchdog]", tmp_path)
    for installs in (gpu, watchdog):
        for url in installs.values():
            assert url.startswith(wheelhouse.as_uri() + "/"), url  # from the wheelhouse, nothing from an index
            _, _, _, tags = parse_wheel_filename(url.rsplit("/", 1)[1])
            assert tags & _target_tags(version), url  # a wheel that runs on this Python
    # a GPU node gets the NVML binding and not the Kubernetes client; the control host the reverse; psutil neither
    assert "nvidia-ml-py" in gpu
    assert "kubernetes" not in gpu
    assert "kubernetes" in watchdog
    assert "nvidia-ml-py" not in watchdog
    assert "psutil" not in gpu
    assert "psutil" not in watchdog


def test_binary_wheels_are_for_the_targets_not_the_controller(wheelhouse: Path) -> None:
    targets = set().union(*(_target_tags(version) for version in TARGETS))
    wheels = sorted(wheelhouse.glob("*.whl"))
    assert any(path.name.startswith("pai_monitoring-") for path in wheels)
    for path in wheels:
        _, _, _, tags = parse_wheel_filename(path.name)
        assert tags & targets, path.name
    # each target has its own build of a compiled dependency
    yaml_wheels = {path.name.split("-")[2] for path in wheels if path.name.lower().startswith("pyyaml-")}
    assert {"cp311", "cp313"} <= yaml_wheels
