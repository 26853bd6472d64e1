"""Configuration as an operator meets it: --config.check, unusable files, the README commands, --help."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest

from tests.support.exporter import REPO, daemon_env, free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
WATCHDOG = ("-c", "import sys; from pai_monitoring.cli import watchdog_main; sys.exit(watchdog_main())")


def run(
    *args: str, daemon: tuple[str, ...] = ("-m", "pai_monitoring.cli"), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *daemon, *args],
        cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def assert_port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n"
        "contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n"
        "users:\n- name: u\n  user:\n    token: t\n"
    )
    return path


def test_config_check_validates_everything_and_binds_nothing(tmp_path: Path) -> None:
    port = free_port()
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\nhttp_server_config:\n  http2: true\n")
    config = tmp_path / "exporter.yml"
    config.write_text("web:\n  max_requests: 4\ncollectors:\n  node_health:\n    interval: 15\n")
    listen = f"--web.listen-address=127.0.0.1:{port}"
    good = run("--config.check", listen, f"--config.file={config}", f"--web.config.file={web}")
    assert good.returncode == 0, good.stderr
    assert "configuration is valid" in good.stdout
    assert_port_free(port)

    config.write_text("collectors:\n  node_health:\n    interval: 0\n")
    bad = run("--config.check", listen, f"--config.file={config}")
    assert bad.returncode == 2
    assert "--collector.node_health.interval" in bad.stderr
    web.write_text("basic_auth_users:\n  prometheus: plain\n")
    bad = run("--config.check", listen, f"--web.config.file={web}")
    assert bad.returncode == 2
    assert "not a bcrypt hash" in bad.stderr
    assert_port_free(port)


def test_watchdog_config_check(tmp_path: Path, kubeconfig: Path) -> None:
    assert run("--config.check", f"--collector.kubernetes.kubeconfig={kubeconfig}", daemon=WATCHDOG).returncode == 0
    config = tmp_path / "watchdog.yml"
    config.write_text("collectors:\n  kubernetes:\n    page_size: 0\n")
    bad = run("--config.check", f"--collector.kubernetes.kubeconfig={kubeconfig}", f"--config.file={config}",
              daemon=WATCHDOG)  # fmt: skip
    assert bad.returncode == 2
    assert "--collector.kubernetes.page-size" in bad.stderr


@pytest.mark.parametrize("kind", ["fifo", "latin1", "interval"])
def test_unusable_configuration_exits_2_without_a_traceback(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "exporter.yml"
    if kind == "fifo":
        os.mkfifo(config)  # reading it used to block the exporter for ever
    elif kind == "latin1":
        config.write_bytes("node_name: n\u00e9ud\n".encode("latin-1"))  # used to end in a UnicodeDecodeError
    else:
        config.write_text("collectors:\n  node_health:\n    interval: 1.0e+10\n")  # killed the collector thread
    result = run(f"--web.listen-address=127.0.0.1:{free_port()}", f"--config.file={config}", "--once", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--config.file" in result.stderr or "interval" in result.stderr


def _readme_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run an exporter by hand", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "README: no bash block under 'Run an exporter by hand'"
    commands = [shlex.split(line, comments=True) for line in block[1].splitlines()]
    return [argv for argv in commands if argv and argv[0] in ("pai-job-exporter", "pai-watchdog")]


def test_the_readme_commands_are_valid_as_written(kubeconfig: Path) -> None:
    commands = _readme_commands()
    assert len(commands) >= 3
    etc = kubeconfig.parent  # the files a deployed host has in /etc/pai-monitoring, with the same shapes
    (etc / "job-exporter.yml").write_text("collectors:\n  node_health:\n    interval: 15\n")
    for argv in commands:
        args = [arg.replace("/etc/pai-monitoring/", f"{etc}/") for arg in argv[1:]]
        result = subprocess.run(
            [str(BIN / argv[0]), *args, "--config.check"],
            env=daemon_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{shlex.join(argv)}: {result.stderr}"


@pytest.mark.parametrize("daemon", [("-m", "pai_monitoring.cli"), WATCHDOG])
def test_help_states_each_default_once(daemon: tuple[str, ...]) -> None:
    result = run("--help", daemon=daemon)
    assert result.returncode == 0
    blocks = re.split(r"\n(?=  -)", result.stdout)  # one block per option, continuation lines included
    doubled = [block.split()[0] for block in blocks if block.count("default") > 1]
    assert doubled == [], f"defaults printed twice: {doubled}"
