"""What an operator checks after deploying pai-job-exporter with the role's defaults on a host without a GPU.

Bad variables (listen address, a port another program or exporter holds) are refused in preflight: local plays in
tests/unit/test_role_preflight.py; that such a play leaves the running exporter alone: test_failed_plays.py."""

from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-default-node")]

UNIT = "pai-job-exporter.service"
URL = "http://127.0.0.1:9102/metrics"
VENV = "/opt/pai-monitoring/job-exporter/venv"


def test_installed_from_the_wheelhouse_into_its_own_virtualenv(host: Any) -> None:
    assert host.file(f"{VENV}/bin/pai-job-exporter").is_file
    version = host.run(f"{VENV}/bin/pip show pai-monitoring")
    assert version.rc == 0, version.stderr
    assert host.file("/opt/pai-monitoring/job-exporter/wheelhouse").is_directory


def test_service_user_has_no_login_shell(host: Any) -> None:
    user = host.user("pai-job-exporter")
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000
    assert user.group == "pai-job-exporter"


def test_configuration_files(host: Any) -> None:
    config = host.file("/etc/pai-monitoring/job-exporter.yml")
    assert (config.user, config.group, config.mode) == ("root", "pai-job-exporter", 0o640)
    assert not host.file("/etc/pai-monitoring/job-exporter-web.yml").exists
    unit = host.file("/etc/systemd/system/pai-job-exporter.service")
    assert (unit.user, unit.mode) == ("root", 0o644)
    assert unit.content_string.startswith("#\n# Ansible managed")


def test_unit_is_hardened(host: Any) -> None:
    props = pt.unit_properties(
        host,
        UNIT,
        "User",
        "Restart",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "DevicePolicy",
        "DeviceAllow",
        "ProtectControlGroups",
        "AmbientCapabilities",
        "MemoryMax",
        "CPUQuotaPerSecUSec",
    )
    assert props["User"] == "pai-job-exporter"
    assert props["Restart"] == "always"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    # The GPU collector is on (its library is missing here): only the NVIDIA device classes besides the pseudo
    # devices, so a driver installed later is read after the udev rule restarts the unit.
    assert props["PrivateDevices"] == "no"
    assert props["DevicePolicy"] == "closed"
    assert pt.device_allow(props) == pt.NVIDIA_DEVICE_CLASSES
    assert props["ProtectControlGroups"] == "yes"
    assert set(props["AmbientCapabilities"].split()) == {"cap_dac_read_search", "cap_sys_ptrace"}
    assert props["MemoryMax"] == str(256 * 1024**2)
    assert props["CPUQuotaPerSecUSec"] == "500ms"


def test_service_runs_and_listens_on_every_address(host: Any) -> None:
    # The shipped default ":9102": Prometheus on the control guest scrapes it (test_prometheus.py).
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://0.0.0.0:9102").is_listening or host.socket("tcp://:::9102").is_listening
    assert not host.socket("tcp://0.0.0.0:9101").is_listening


def test_metrics_answer_with_the_runtime_families(host: Any) -> None:
    status, body = pt.http_get(host, URL)
    assert status == 200, pt.journal(host, UNIT)
    families = pt.metric_families(body)
    assert {"pai_exporter_build_info", "pai_scrape_collector_success"} <= families, sorted(families)
    # The original name, kept for the JobExporterHangs alert.
    assert pt.samples(body, "collector_iteration_count_total"), sorted(families)
    assert 'daemon="pai-job-exporter"' in body


def test_gpu_collector_reports_the_missing_library(host: Any) -> None:
    _, body = pt.http_get(host, URL)
    assert pt.current_nvml_status(body) == ["library_not_found"], pt.samples(body, "pai_gpu_nvml_status")


def test_systemd_exposure_is_ok(host: Any) -> None:
    pt.assert_exposure(host, UNIT)
