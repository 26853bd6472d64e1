"""The command line as an operator meets it: --once, bad configuration, a clean SIGTERM, promtool on the output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.exporter import REPO, free_port
from tests.support.promtool import promtool_findings

pytestmark = pytest.mark.integration


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tests.support.run_exporter", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_once_prints_the_exposition_and_exits_0() -> None:
    result = run("--once")
    assert result.returncode == 0, result.stderr
    assert 'pai_scrape_collector_success{collector="node_health"} 1.0' in result.stdout
    assert "# TYPE zombie_process_count gauge" in result.stdout


def test_once_exits_1_when_a_collector_fails() -> None:
    result = run("--once", "--collector.boom")
    assert result.returncode == 1
    assert 'pai_scrape_collector_success{collector="boom"} 0.0' in result.stdout
    assert 'pai_scrape_collector_success{collector="node_health"} 1.0' in result.stdout
    assert "simulated collector fault" in result.stderr


def test_once_honours_the_deadline_of_a_hanging_collector() -> None:
    result = run("--once", "--collector.hang", "--collector.hang.hang-after=0", "--collector.hang.timeout=1")
    assert result.returncode == 1
    assert 'pai_scrape_collector_success{collector="hang"} 0.0' in result.stdout


def test_promtool_accepts_the_exposition() -> None:
    result = run("--once")
    assert "# TYPE pai_scrape_collector_success gauge" in result.stdout
    assert promtool_findings(result.stdout) == []


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--web.listen-address=localhost"], "--web.listen-address"),
        (["--web.listen-address=:99999"], "--web.listen-address"),
        (["--web.max-requests=0"], "--web.max-requests"),
        (["--collector.node_health.interval=-1"], "--collector.node_health.interval"),
        (["--collector.node_health.rss-threshold-bytes=lots"], "--collector.node_health.rss-threshold-bytes"),
        (["--textfile.directory=/nonexistent/dir"], "--textfile.directory"),
        (["--web.config.file=/nonexistent/web.yml"], "--web.config.file"),
        (["--log.level=chatty"], "--log.level"),
    ],
)
def test_bad_configuration_exits_2_naming_the_flag_before_binding(args: list[str], flag: str) -> None:
    port = free_port()
    result = run(f"--web.listen-address=127.0.0.1:{port}", *args) if "listen" not in args[0] else run(*args)
    assert result.returncode == 2
    assert flag in result.stderr
    with socket.socket() as sock:  # nothing was bound
        sock.bind(("127.0.0.1", port))


def test_bad_yaml_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    config.write_text("collectors:\n  node_health:\n    rss_threshold_bytes: -5\n")
    result = run(f"--config.file={config}", "--once")
    assert result.returncode == 2
    assert "rss-threshold-bytes" in result.stderr
    config.write_text("collectors:\n  nvidia:\n    enabled: true\n")
    result = run(f"--config.file={config}", "--once")
    assert result.returncode == 2
    assert "unknown collectors: nvidia" in result.stderr


def test_flags_win_over_the_yaml_file(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    config.write_text("collectors:\n  node_health:\n    enabled: false\n  steady:\n    enabled: true\n")
    result = run(f"--config.file={config}", "--once")
    assert "node_health" not in result.stdout
    assert "pai_test_steady 1.0" in result.stdout
    result = run(f"--config.file={config}", "--once", "--collector.node_health")
    assert 'collector="node_health"' in result.stdout
