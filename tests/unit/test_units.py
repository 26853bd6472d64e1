"""The units and drop-ins the roles write, rendered by Ansible from the roles' own templates and vars (the templates
each role hands to the shared exporter_base role): what an operator's host gets, without a host. The roles on real
systemd guests are molecule's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.render import render, role_defaults

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).parent / "units" / "render.yml"
DOC_DIR = "/usr/share/doc/pai-monitoring/"
BCRYPT = "$2b$12$" + "a" * 53

HOSTS: dict[str, Any] = {
    "gpu_nodes": {"hosts": {"gpu-1": {"job_exporter_textfile_enabled": True}}},
    "cpu_nodes": {"hosts": {"cpu-1": {"job_exporter_collectors_disabled": ["gpu"]}}},
    "monitoring": {
        "hosts": {
            "mon-1": {
                "prometheus_web_tls_cert_file": "/etc/prometheus/site.crt",
                "prometheus_web_tls_key_file": "/etc/prometheus/site.key",
                "prometheus_private_users": False,
                "job_exporter_web_basic_auth_users": {"prometheus": BCRYPT},
            },
        }
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """One playbook run over every host of HOSTS; the text of each file, by host and name."""
    defaults = role_defaults("job_exporter", "watchdog", "node_exporter", "prometheus", "alertmanager")
    inventory = {"all": {"vars": defaults, "children": HOSTS}}
    return render(PLAYBOOK, inventory, tmp_path_factory.mktemp("units"))


def directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=Value`` line of a unit or drop-in, by key, in order (comments and continuations left out)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("#", " ", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_gpu_node_allows_the_nvidia_device_classes_not_the_nodes_found_at_deploy_time(
    rendered: dict[str, dict[str, str]],
) -> None:
    unit = directives(rendered["gpu-1"]["pai-job-exporter.service"])
    assert unit["PrivateDevices"] == ["no"]  # a private /dev would never show a node created later
    assert unit["DevicePolicy"] == ["closed"]
    allowed = unit["DeviceAllow"]
    assert {"char-nvidia-frontend rw", "char-nvidia-caps rw", "char-nvidia-uvm rw"} <= set(allowed)
    assert all(entry.startswith("char-nvidia") for entry in allowed), allowed  # classes only, no /dev/... path
    rule = rendered["gpu-1"]["pai-job-exporter.rules"]
    assert 'KERNEL=="nvidia|nvidia_uvm"' in rule
    assert "try-restart pai-job-exporter.service" in rule  # a driver loaded later restarts the exporter


def test_cpu_node_without_the_gpu_collector_sees_no_device(rendered: dict[str, dict[str, str]]) -> None:
    unit = directives(rendered["cpu-1"]["pai-job-exporter.service"])
    assert unit["PrivateDevices"] == ["yes"]
    assert "DeviceAllow" not in unit


def test_units_point_at_this_projects_documents(rendered: dict[str, dict[str, str]]) -> None:
    for name in ("pai-job-exporter.service", "pai-watchdog.service"):
        documentation = directives(rendered["gpu-1"][name])["Documentation"]
        urls = " ".join(documentation).split()
        assert urls, name
        for url in urls:
            assert url.startswith("file://" + DOC_DIR), url
            assert (REPO / "docs" / url.removeprefix("file://" + DOC_DIR)).is_file(), url


def test_each_unit_keeps_its_own_exceptions_to_the_shared_sandbox(rendered: dict[str, dict[str, str]]) -> None:
    job = directives(rendered["gpu-1"]["pai-job-exporter.service"])
    watchdog = directives(rendered["gpu-1"]["pai-watchdog.service"])
    node = directives(rendered["gpu-1"]["node-exporter-hardening.conf"])
    prometheus = directives(rendered["mon-1"]["prometheus-hardening.conf"])
    # the job exporter reads other users' processes: two capabilities, every process visible
    assert job["CapabilityBoundingSet"] == ["CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    assert job["ProcSubset"] == ["all"]
    assert "PrivateUsers" not in job
    assert "ProtectProc" not in job
    assert job["ReadWritePaths"] == ["/var/lib/prometheus/node-exporter"]
    # the watchdog only talks to the API server
    assert watchdog["CapabilityBoundingSet"] == [""]
    assert watchdog["PrivateUsers"] == ["yes"]
    assert watchdog["ProtectProc"] == ["invisible"]
    assert watchdog["PrivateDevices"] == ["yes"]
    # node_exporter's timex collector calls adjtimex(2), its filesystem collector sees /home
    assert node["ProtectClock"] == ["no"]
    assert node["SystemCallFilter"] == ["@system-service", "~@privileged @resources", "adjtimex"]
    assert node["ProtectHome"] == ["read-only"]
    assert node["Restart"] == ["always"]
    assert node["MemoryMax"] == ["128M"]
    # Prometheus writes its TSDB only; a host without user namespaces turns them off
    assert prometheus["ReadWritePaths"] == ["/var/lib/prometheus/metrics2"]
    assert prometheus["PrivateUsers"] == ["no"]
    for unit in (job, watchdog, node, prometheus):
        assert unit["NoNewPrivileges"] == ["yes"]
        assert unit["ProtectSystem"] == ["strict"]
        assert unit["SystemCallArchitectures"] == ["native"]


def test_web_configurations_come_from_one_template(rendered: dict[str, dict[str, str]]) -> None:
    assert yaml.safe_load(rendered["mon-1"]["job-exporter-web.yml"]) == {"basic_auth_users": {"prometheus": BCRYPT}}
    assert yaml.safe_load(rendered["mon-1"]["prometheus-web.yml"]) == {
        "tls_server_config": {"cert_file": "/etc/prometheus/site.crt", "key_file": "/etc/prometheus/site.key"}
    }
