"""The suite's lifecycle on the sandbox, as the original design has it: stop (``stop.yml`` keeps configuration and
data), deploy again (``site.yml`` brings back the series scraped before the stop), delete (``delete.yml -e
purge_data=true`` leaves nothing of the suite on any host). The watchdog is part of it (the control guest).

Runs last of the end-to-end modules (tests/e2e/conftest.py): it takes the suite off the sandbox. The tests run in
file order and each one moves the sandbox to the next stage, as an operator would.
"""

from __future__ import annotations

import pytest

from sandbox.sandbox import REPO, Guest, Sandbox

pytestmark = pytest.mark.e2e

NODE_UNITS = ("prometheus-node-exporter.service", "pai-job-exporter.service")
CONTROL_UNITS = (
    "prometheus.service",
    "prometheus-alertmanager.service",
    "prometheus-node-exporter.service",
    "pai-watchdog.service",
)
# A further monitoring host (<name>-mon2): a Prometheus replica and a member of the Alertmanager cluster.
MONITORING_UNITS = ("prometheus.service", "prometheus-alertmanager.service", "prometheus-node-exporter.service")
JOBS = ("node", "pai_job_exporter", "prometheus", "alertmanager", "pai_watchdog")
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
PORTS = (9090, 9093, 9100, 9101, 9102)

# Shared between the stages: the time of a sample scraped before the stop.
STATE: dict[str, float] = {}


def units(guest: Guest) -> tuple[str, ...]:
    return {"ctl": CONTROL_UNITS, "mon": MONITORING_UNITS}.get(guest.role, NODE_UNITS)


def systemctl(sandbox: Sandbox, guest: Guest, *args: str) -> str:
    return sandbox.exec(guest, ["systemctl", *args], check=False).stdout.strip()


def assert_running(sandbox: Sandbox, guest: Guest) -> None:
    for unit in units(guest):
        state = systemctl(sandbox, guest, "is-active", unit)
        journal = sandbox.exec(guest, ["journalctl", "--no-pager", "-n", "30", "-u", unit], check=False).stdout
        assert state == "active", f"{unit} on {guest.name} is {state}:\n{journal}"
        assert systemctl(sandbox, guest, "is-enabled", unit) == "enabled", f"{unit} on {guest.name} not enabled"


def test_the_suite_runs_everywhere_and_every_target_is_up(sandbox: Sandbox) -> None:
    for guest in sandbox.guests:
        assert_running(sandbox, guest)
    sandbox.wait_targets_up()
    jobs = {t["labels"]["job"] for t in sandbox.targets()}
    assert jobs >= set(JOBS), f"jobs missing: {set(JOBS) - jobs}"
    sample = sandbox.query(f'up{{job="node", instance="{sandbox.gpu(0).name}:9100"}}')
    assert sample, "no sample of up{job='node'}"
    assert sample[0]["metric"]["pai_service_name"] == "node-exporter"
    STATE["scraped_at"] = float(sample[0]["value"][0])


def test_stop_stops_every_service_and_keeps_the_data(sandbox: Sandbox) -> None:
    assert "scraped_at" in STATE, "the deploy stage did not run"
    sandbox.playbook(REPO / "playbooks" / "stop.yml")
    for guest in sandbox.guests:
        for unit in units(guest):
            assert systemctl(sandbox, guest, "is-active", unit) != "active", f"{unit} still runs on {guest.name}"
            assert systemctl(sandbox, guest, "is-enabled", unit) != "enabled", (
                f"{unit} on {guest.name} would start again at boot after stop.yml"
            )
    for path in ("/var/lib/prometheus/metrics2/wal", "/etc/prometheus/prometheus.yml"):
        assert sandbox.exec(sandbox.ctl, ["test", "-e", path], check=False).returncode == 0, f"{path} is gone"


def test_site_again_brings_back_the_series_scraped_before_the_stop(sandbox: Sandbox) -> None:
    sandbox.playbook(REPO / "playbooks" / "site.yml")
    for guest in sandbox.guests:
        assert_running(sandbox, guest)
    data = sandbox.get_json(
        "prometheus",
        "/api/v1/query",
        {"query": f'up{{job="node", instance="{sandbox.gpu(0).name}:9100"}}', "time": f"{STATE['scraped_at']:.3f}"},
    )
    before = data["data"]["result"]
    assert before, "the series scraped before stop.yml is gone"
    assert before[0]["value"][1] == "1"
    sandbox.wait_targets_up()


def test_delete_with_purge_data_leaves_nothing_of_the_suite(sandbox: Sandbox) -> None:
    sandbox.playbook(REPO / "playbooks" / "delete.yml", "-e", "purge_data=true")
    for guest in sandbox.guests:
        for unit in units(guest):
            state = systemctl(sandbox, guest, "show", "--property=LoadState", "--value", unit)
            assert state == "not-found", f"{unit} is still known to systemd on {guest.name} ({state})"
        for package in PACKAGES:
            status = sandbox.exec(guest, ["dpkg-query", "-W", "-f=${Status}", package], check=False).stdout
            assert "installed" not in status, f"{package} on {guest.name}: {status}"
            assert "config-files" not in status, f"{package} on {guest.name}: {status}"
        for user in USERS:
            assert sandbox.exec(guest, ["getent", "passwd", user], check=False).returncode != 0, (
                f"user {user} is left on {guest.name}"
            )
        for group in GROUPS:
            assert sandbox.exec(guest, ["getent", "group", group], check=False).returncode != 0, (
                f"group {group} is left on {guest.name}"
            )
        for path in PATHS:
            assert sandbox.exec(guest, ["test", "-e", path], check=False).returncode != 0, (
                f"{path} is left on {guest.name}"
            )
        listening = sandbox.exec(guest, ["ss", "-Htln"]).stdout
        for port in PORTS:
            assert f":{port} " not in listening, f"port {port} still listens on {guest.name}:\n{listening}"
