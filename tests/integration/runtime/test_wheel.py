"""The wheel the roles install: built from the repository, installed into a new virtualenv, and run."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration


def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheels = list(dist.glob("pai_monitoring-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheels[0])], check=True, capture_output=True, timeout=600)

    def help_of(command: str) -> subprocess.CompletedProcess[str]:
        argv = [str(env_dir / "bin" / command), "--help"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    # Without its extra the watchdog cannot import the Kubernetes client: a configuration error, not a traceback.
    bare = help_of("pai-watchdog")
    assert bare.returncode == 2, bare.stderr
    assert "pai-monitoring[watchdog]" in bare.stderr, bare.stderr
    assert "Traceback" not in bare.stderr, bare.stderr
    subprocess.run(
        [str(pip), "install", "-q", f"{wheels[0]}[watchdog]"], check=True, capture_output=True, timeout=600
    )  # fmt: skip
    for command in ("pai-job-exporter", "pai-watchdog"):
        result = help_of(command)
        assert result.returncode == 0, result.stderr
        assert "--web.listen-address" in result.stdout
    once = subprocess.run(
        [str(env_dir / "bin" / "pai-job-exporter"), "--once"], capture_output=True, text=True, timeout=120, check=False
    )
    assert once.returncode == 0, once.stderr
    assert 'pai_scrape_collector_success{collector="node_health"} 1.0' in once.stdout
    assert (
        "py.typed"
        in subprocess.run(
            [str(pip), "show", "-f", "pai-monitoring"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
