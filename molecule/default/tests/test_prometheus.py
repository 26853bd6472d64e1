"""What an operator checks after deploying Prometheus with the role's defaults."""

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pai_testinfra as pt
import yaml

testinfra_hosts = [pt.ssh("pai-default-ctl")]

UNIT = "prometheus.service"
BASE = "http://127.0.0.1:9090"
REPO = Path(os.environ.get("PAI_REPO_DIR") or Path(__file__).resolve().parents[3])
SCENARIO = Path(__file__).resolve().parents[1]
NODE, CTL = "pai-default-node", "pai-default-ctl"
POLL_S = 2


def api(host, path):
    status, body = pt.http_get(host, BASE + path)
    assert status == 200, f"GET {path}: HTTP {status}"
    return json.loads(body)["data"]


def shipped_alerts():
    names = set()
    for path in sorted((REPO / "rules").glob("*/*.yml")):
        if path.parent.name == "tests":
            continue
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "groups" in data:
            names |= {r["alert"] for g in data["groups"] for r in g.get("rules") or [] if "alert" in r}
    return names


def loaded_alerts(host):
    return {r["name"] for g in api(host, "/api/v1/rules")["groups"] for r in g["rules"] if r["type"] == "alerting"}


def test_package_config_files_owners_and_modes(host: Any) -> None:
    assert host.package("prometheus").is_installed
    for path in ("/etc/prometheus/prometheus.yml", "/etc/prometheus/file_sd/node.yml"):
        config = host.file(path)
        assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640), path
    flags = host.file("/etc/default/prometheus")
    assert (flags.user, flags.mode) == ("root", 0o644)
    assert "--web.listen-address=0.0.0.0:9090" in flags.content_string
    assert "--storage.tsdb.retention.time=31d" in flags.content_string
    assert not host.file("/etc/prometheus/web-config.yml").exists


def test_service_user_has_no_login_shell(host: Any) -> None:
    user = host.user("prometheus")
    assert user.shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.uid < 1000


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
            "MemoryMax": str(4 * 1024**3),
            "User": "prometheus",
        },
    )
    pt.assert_exposure(host, UNIT)


def test_service_runs_and_listens(host: Any) -> None:
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://0.0.0.0:9090").is_listening or host.socket("tcp://:::9090").is_listening


def test_targets_are_written_per_job_from_inventory_groups(host: Any) -> None:
    node = yaml.safe_load(host.file("/etc/prometheus/file_sd/node.yml").content_string)
    assert node == [{"targets": [f"{CTL}:9100", f"{NODE}:9100"], "labels": {"pai_service_name": "node-exporter"}}]
    # The node is in cpu_nodes (no GPU): it runs a job exporter too.
    assert yaml.safe_load(host.file("/etc/prometheus/file_sd/pai_job_exporter.yml").content_string) == [
        {"targets": [f"{NODE}:9102"], "labels": {"pai_service_name": "job-exporter"}}
    ]
    config = yaml.safe_load(host.file("/etc/prometheus/prometheus.yml").content_string)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"node", "pai_job_exporter", "pai_watchdog", "prometheus", "alertmanager"}
    assert config["alerting"]["alertmanagers"][0]["file_sd_configs"] == [
        {"files": ["/etc/prometheus/file_sd/alertmanager.yml"]}
    ]


def test_prometheus_loaded_every_shipped_alert(host: Any) -> None:
    expected = shipped_alerts()
    assert expected, "the repository ships no alert rules"
    # The always-firing heartbeat ships in the rules but is deployed only with prometheus_heartbeat_enabled.
    assert loaded_alerts(host) == expected - {"PaiMonitoringHeartbeat"}


def test_own_target_is_up_with_its_service_label(host: Any) -> None:
    deadline = time.monotonic() + 90
    while True:
        active = api(host, "/api/v1/targets")["activeTargets"]
        own = [t for t in active if t["labels"]["job"] == "prometheus"]
        if own and own[0]["health"] == "up":
            break
        assert time.monotonic() < deadline, f"prometheus target not up: {own}"
        time.sleep(POLL_S)
    assert own[0]["labels"]["pai_service_name"] == "prometheus"
    assert own[0]["labels"]["instance"] == f"{CTL}:9090"
    status, body = pt.http_get(host, BASE + "/metrics")
    assert status == 200
    assert "prometheus_build_info" in pt.metric_families(body)


def test_every_exporter_of_both_guests_is_scraped(host: Any) -> None:
    # The exporters listen on their shipped default addresses, so Prometheus reaches them across the network.
    expected = {
        ("node", f"{NODE}:9100"),
        ("node", f"{CTL}:9100"),
        ("pai_job_exporter", f"{NODE}:9102"),
        ("pai_watchdog", f"{CTL}:9101"),
        ("prometheus", f"{CTL}:9090"),
        ("alertmanager", f"{CTL}:9093"),
    }
    active = pt.targets_when_up(lambda: api(host, "/api/v1/targets")["activeTargets"], expected)
    found = {(t["labels"]["job"], t["labels"]["instance"]) for t in active}
    assert found == expected, f"unexpected targets: {found - expected}"


def test_rule_file_rejected_by_promtool_fails_the_play_and_changes_nothing(host: Any) -> None:
    before_rules = loaded_alerts(host)
    before_pid = pt.unit_properties(host, UNIT, "MainPID")["MainPID"]
    before_config = host.file("/etc/prometheus/prometheus.yml").sha256sum
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO / "files/push_broken_rule.yml")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # The play stops in the rule file task, with promtool's verdict on the file.
    assert "Copy the site's rule files" in output
    assert "failed to validate" in output or "FAILED" in output, output
    assert not host.file("/etc/prometheus/rules/site/broken.rules.yml").exists
    assert host.file("/etc/prometheus/prometheus.yml").sha256sum == before_config
    assert pt.unit_properties(host, UNIT, "MainPID")["MainPID"] == before_pid
    pt.assert_running(host, UNIT)
    assert loaded_alerts(host) == before_rules
    assert "SiteBroken" not in before_rules
