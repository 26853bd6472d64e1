"""The suite's lifecycle on one host: deploy (site.yml), stop (stop.yml), deploy again, delete with purge_data.

The tests run in file order and each one moves the host to the next stage, as an operator would.
"""

import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pai_testinfra as pt
import yaml

testinfra_hosts = ["podman://lifecycle-host"]

REPO = Path(os.environ.get("PAI_REPO_DIR") or Path(__file__).resolve().parents[3])
SCENARIO = Path(__file__).resolve().parents[1]
HOST_GROUPS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"][0]["groups"]
PROMETHEUS = "http://127.0.0.1:9090"
# The watchdog runs only when the host is in the control group.
WATCHDOG = "control" in HOST_GROUPS
UNITS = (
    "prometheus.service",
    "prometheus-alertmanager.service",
    "prometheus-node-exporter.service",
    "pai-job-exporter.service",
) + (("pai-watchdog.service",) if WATCHDOG else ())
JOBS = ("node", "pai_job_exporter", "prometheus", "alertmanager") + (("pai_watchdog",) if WATCHDOG else ())
PACKAGES = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter")
USERS = ("prometheus", "pai-job-exporter", "pai-watchdog")
GROUPS = ("prometheus", "pai-job-exporter", "pai-watchdog", "pai-textfile")
PATHS = (
    "/etc/prometheus",
    "/etc/pai-monitoring",
    "/etc/default/prometheus",
    "/etc/default/prometheus-alertmanager",
    "/etc/default/prometheus-node-exporter",
    "/var/lib/prometheus",
    "/opt/pai-monitoring",
    "/etc/systemd/system/prometheus.service.d",
    "/etc/systemd/system/prometheus-alertmanager.service.d",
    "/etc/systemd/system/prometheus-node-exporter.service.d",
    "/etc/systemd/system/pai-job-exporter.service",
    "/etc/systemd/system/pai-watchdog.service",
)

# Shared between the stages: the time of a sample scraped before the stop.
STATE: dict[str, float] = {}


def playbook(name, *extra):
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / "playbooks" / name), *extra],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def query(host, expr, at=None):
    params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    status, body = pt.http_get(host, f"{PROMETHEUS}/api/v1/query?{urllib.parse.urlencode(params)}")
    assert status == 200, f"query {expr}: HTTP {status}"
    return json.loads(body)["data"]["result"]


def wait_for_targets_up(host, jobs=JOBS, limit=180):
    deadline = time.monotonic() + limit
    while True:
        status, body = pt.http_get(host, f"{PROMETHEUS}/api/v1/targets")
        health = {}
        if status == 200:
            for target in json.loads(body)["data"]["activeTargets"]:
                health[target["labels"]["job"]] = target["health"]
        if all(health.get(job) == "up" for job in jobs):
            return
        assert time.monotonic() < deadline, f"targets not up: {health}"
        time.sleep(3)


def test_site_deploys_the_whole_suite_and_every_target_is_up(host: Any) -> None:
    for unit in UNITS:
        pt.assert_running(host, unit)
    wait_for_targets_up(host)
    sample = query(host, 'up{job="node"}')
    assert sample, "no sample of up{job='node'}"
    assert sample[0]["metric"]["pai_service_name"] == "node-exporter"
    STATE["scraped_at"] = float(sample[0]["value"][0])


def test_stop_stops_every_service_and_keeps_the_data(host: Any) -> None:
    assert "scraped_at" in STATE, "the deploy stage did not run"
    playbook("stop.yml")
    for unit in UNITS:
        service = host.service(unit)
        assert not service.is_running, f"{unit} still runs after stop.yml"
        assert not service.is_enabled, f"{unit} would start again at boot after stop.yml"
    assert host.file("/var/lib/prometheus/metrics2/wal").is_directory
    assert host.file("/etc/prometheus/prometheus.yml").exists


def test_site_again_brings_back_the_series_scraped_before_the_stop(host: Any) -> None:
    playbook("site.yml")
    for unit in UNITS:
        pt.assert_running(host, unit)
    before = query(host, 'up{job="node"}', at=STATE["scraped_at"])
    assert before, "the series scraped before stop.yml is gone"
    assert before[0]["value"][1] == "1"
    wait_for_targets_up(host)


def test_delete_with_purge_data_leaves_nothing_of_the_suite(host: Any) -> None:
    playbook("delete.yml", "-e", "purge_data=true")
    for unit in UNITS:
        state = host.run(f"systemctl show --property=LoadState --value {unit}").stdout.strip()
        assert state == "not-found", f"{unit} is still known to systemd ({state})"
    for package in PACKAGES:
        status = host.run(f"dpkg-query -W -f='${{Status}}' {package}").stdout
        assert "installed" not in status, f"{package}: {status}"
        assert "config-files" not in status, f"{package}: {status}"
    for user in USERS:
        assert not host.user(user).exists, f"user {user} is left"
    for group in GROUPS:
        assert not host.group(group).exists, f"group {group} is left"
    for path in PATHS:
        assert not host.file(path).exists, f"{path} is left"
    for port in (9090, 9093, 9100, 9101, 9102):
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, f"port {port} still listens"
