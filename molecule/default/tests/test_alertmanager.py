"""What an operator checks after deploying Alertmanager with the role's defaults."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-default-ctl")]

UNIT = "prometheus-alertmanager.service"
BASE = "http://127.0.0.1:9093"
SCENARIO = Path(__file__).resolve().parents[1]


def status(host):
    code, body = pt.http_get(host, BASE + "/api/v2/status")
    assert code == 200
    return json.loads(body)


def test_package_config_and_flags(host: Any) -> None:
    assert host.package("prometheus-alertmanager").is_installed
    config = host.file("/etc/prometheus/alertmanager.yml")
    assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640)
    flags = host.file("/etc/default/prometheus-alertmanager").content_string
    assert "--web.listen-address=0.0.0.0:9093" in flags
    assert "--storage.path=/var/lib/prometheus/alertmanager" in flags
    # An empty cluster listen address turns gossip off.
    assert '--cluster.listen-address="' in flags or "--cluster.listen-address= " in flags


def test_service_user_has_no_login_shell(host: Any) -> None:
    user = host.user("prometheus")
    assert user.shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.uid < 1000


def test_service_runs_alone_without_gossip(host: Any) -> None:
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://0.0.0.0:9093").is_listening or host.socket("tcp://:::9093").is_listening
    assert not host.socket("tcp://0.0.0.0:9094").is_listening
    assert status(host)["cluster"]["status"] == "disabled"


def test_running_config_is_the_rendered_one(host: Any) -> None:
    original = status(host)["config"]["original"]
    for receiver in ("pai-default", "pai-fatal", "pai-error", "pai-warn", "pai-info"):
        assert f"name: {receiver}" in original
    assert "NodeNotReady" in original


def test_state_directory_is_writable_by_the_service_only(host: Any) -> None:
    data = host.file("/var/lib/prometheus/alertmanager")
    assert data.is_directory
    assert data.user == "prometheus"


def test_hardening_drop_in_and_exposure(host: Any) -> None:
    pt.assert_drop_in_hardening(
        host,
        UNIT,
        {
            "Restart": "always",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "MemoryMax": str(512 * 1024**2),
            "User": "prometheus",
        },
    )
    pt.assert_exposure(host, UNIT)


def test_config_rejected_by_amtool_fails_the_play_and_changes_nothing(host: Any) -> None:
    before_config = host.file("/etc/prometheus/alertmanager.yml").sha256sum
    before_pid = pt.unit_properties(host, UNIT, "MainPID")["MainPID"]
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(SCENARIO / "files/push_broken_route.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # The play stops in the template task, with amtool's verdict on the file.
    assert "Write alertmanager.yml" in output
    assert 'undefined receiver "no-such-receiver"' in output
    assert host.file("/etc/prometheus/alertmanager.yml").sha256sum == before_config
    assert pt.unit_properties(host, UNIT, "MainPID")["MainPID"] == before_pid
    assert "no-such-receiver" not in status(host)["config"]["original"]
