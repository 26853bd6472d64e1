"""Highly available monitoring from the same roles: what the prometheus and alertmanager roles write on one
monitoring host and on several, rendered by Ansible from the roles' own templates, vars and filters, and checked
by the real promtool and amtool. (The running pair, losing a host, is the end-to-end test's.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.render import render, role_defaults
from tests.unit.test_rules import render_alertmanager_config

PLAYBOOK = Path(__file__).parent / "monitoring_ha" / "render.yml"
REMOTE_WRITE = [{"url": "http://vm.example.org:8428/api/v1/write", "queue_config": {"max_shards": 4}}]


def _defaults() -> dict[str, Any]:
    return role_defaults("prometheus", "alertmanager")


SITES: dict[str, Any] = {
    # the usual inventory: the monitoring group, here with two hosts
    "monitoring": {
        "hosts": {"monitor-1": {}, "monitor-2": {"alertmanager_cluster_port": 19094}},
        "vars": {"prometheus_external_labels": {"cluster": "gpu-a"}},
    },
    # a site with one monitoring host (its own group, so that one inventory holds every case)
    "solo": {
        "hosts": {"solo-1": {}},
        "vars": {"prometheus_replica_group": "solo", "alertmanager_cluster_group": "solo"},
    },
    # three replicas with explicit names and addresses, a store that deduplicates by the label, the heartbeat on
    "trio": {
        "hosts": {
            "trio-1": {"prometheus_replica": "a", "ansible_host": "10.0.0.11"},
            "trio-2": {"prometheus_replica": "b", "ansible_host": "10.0.0.12"},
            "trio-3": {"prometheus_replica": "c", "ansible_host": "fd00::13"},
        },
        "vars": {
            "prometheus_replica_group": "trio",
            "alertmanager_cluster_group": "trio",
            "prometheus_remote_write_drop_replica": False,
            "prometheus_replica_label": "prometheus_replica",
            "prometheus_heartbeat_enabled": True,
            "alertmanager_cluster_address_var": "ansible_host",
        },
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One playbook run over every site of SITES; the files of each host."""
    work = tmp_path_factory.mktemp("monitoring-ha")
    inventory = {
        "all": {
            "vars": {**_defaults(), "prometheus_remote_write": REMOTE_WRITE},
            "children": {**SITES, "gpu_nodes": {"hosts": {"gpu-node-1": {}}}},
        }
    }
    documents = render(PLAYBOOK, inventory, work)
    files: dict[str, dict[str, Any]] = {}
    for host, texts in documents.items():
        directory = work / host
        directory.mkdir()
        for name, text in texts.items():
            (directory / name).write_text(text, encoding="utf-8")
        files[host] = {
            "path": directory,
            "prometheus": yaml.safe_load(texts["prometheus.yml"]),
            "flags": _flags(texts["alertmanager.default"]),
            "hardening": texts["alertmanager-hardening.conf"],
            "alerts": _alert_names(texts["monitoring.rules.yml"]),
        }
    return files


def _flags(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("ARGS="))
    return line.removeprefix('ARGS="').removesuffix('"').split()


def _alert_names(text: str) -> set[str]:
    doc = yaml.safe_load(text)
    return {rule["alert"] for group in doc["groups"] for rule in group["rules"] if "alert" in rule}


def _check(tool: str, *argv: str) -> None:
    binary = shutil.which(tool)
    if binary is None:
        pytest.fail(f"{tool} not found: install Debian's prometheus and prometheus-alertmanager packages")
    result = subprocess.run([binary, *argv], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _valid(files: dict[str, Any]) -> None:
    _check("promtool", "check", "config", "--syntax-only", str(files["path"] / "prometheus.yml"))
    _check("amtool", "check-config", str(files["path"] / "alertmanager.yml"))


def test_one_monitoring_host_stays_the_simple_default(rendered: dict[str, dict[str, Any]]) -> None:
    files = rendered["solo-1"]
    _valid(files)
    prometheus = files["prometheus"]
    assert "external_labels" not in prometheus["global"]
    assert "alert_relabel_configs" not in prometheus["alerting"]
    assert prometheus["remote_write"] == REMOTE_WRITE  # as given, nothing dropped
    cluster = [flag for flag in files["flags"] if flag.startswith("--cluster.")]
    assert cluster == ["--cluster.listen-address="]  # gossip off: no port 9094 opened
    assert "AF_NETLINK" not in files["hardening"]
    assert "PaiMonitoringHeartbeat" not in files["alerts"]  # off by default
    assert "PrometheusReplicaDown" in files["alerts"]


def test_two_hosts_run_replicas_that_differ_only_in_their_label_and_form_one_cluster(
    rendered: dict[str, dict[str, Any]],
) -> None:
    files = {host: rendered[host] for host in ("monitor-1", "monitor-2")}
    for host, host_files in files.items():
        _valid(host_files)
        prometheus = host_files["prometheus"]
        assert prometheus["global"]["external_labels"] == {"cluster": "gpu-a", "replica": host}
        assert prometheus["alerting"]["alert_relabel_configs"] == [{"action": "labeldrop", "regex": "replica"}]
        # the same Alertmanagers for both: every Prometheus sends to every Alertmanager of the monitoring group
        assert prometheus["alerting"]["alertmanagers"][0]["file_sd_configs"] == [
            {"files": ["/etc/prometheus/file_sd/alertmanager.yml"]}
        ]
        assert prometheus["remote_write"] == [
            {**REMOTE_WRITE[0], "write_relabel_configs": [{"action": "labeldrop", "regex": "replica"}]}
        ]
        assert "AF_NETLINK" in host_files["hardening"]
    one, two = (files[h]["prometheus"] for h in ("monitor-1", "monitor-2"))
    del one["global"]["external_labels"]["replica"], two["global"]["external_labels"]["replica"]
    assert one == two  # identical apart from the replica label
    assert _cluster_flags(files["monitor-1"]) == [
        "--cluster.listen-address=0.0.0.0:9094",
        "--cluster.peer=monitor-2:19094",
    ]
    assert _cluster_flags(files["monitor-2"]) == [
        "--cluster.listen-address=0.0.0.0:19094",
        "--cluster.peer=monitor-1:9094",
    ]


def _cluster_flags(files: dict[str, Any]) -> list[str]:
    return [flag for flag in files["flags"] if flag.startswith("--cluster.")]


def test_explicit_settings_win_and_the_heartbeat_can_be_turned_on(rendered: dict[str, dict[str, Any]]) -> None:
    first = rendered["trio-1"]
    _valid(first)
    assert first["prometheus"]["global"]["external_labels"] == {"prometheus_replica": "a"}
    assert first["prometheus"]["alerting"]["alert_relabel_configs"] == [
        {"action": "labeldrop", "regex": "prometheus_replica"}
    ]
    assert first["prometheus"]["remote_write"] == REMOTE_WRITE
    assert _cluster_flags(first)[1:] == ["--cluster.peer=10.0.0.12:9094", "--cluster.peer=[fd00::13]:9094"]
    assert "PaiMonitoringHeartbeat" in first["alerts"]


def test_heartbeat_goes_only_to_the_switch_and_never_as_a_resolution() -> None:
    config = yaml.safe_load(render_alertmanager_config({"alertmanager_heartbeat_url": "https://hc.example.org/x"}))
    first = config["route"]["routes"][0]
    assert first["receiver"] == "pai-heartbeat"
    assert first["matchers"] == ['alertname="PaiMonitoringHeartbeat"']
    assert not first.get("continue", False)  # it stops here, before the severity routes
    assert (first["group_wait"], first["repeat_interval"]) == ("0s", "5m")
    receiver = next(r for r in config["receivers"] if r["name"] == "pai-heartbeat")
    assert receiver["webhook_configs"] == [{"url": "https://hc.example.org/x", "send_resolved": False, "max_alerts": 0}]
