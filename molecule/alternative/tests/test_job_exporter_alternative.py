"""pai-job-exporter with TLS, basic auth, a non-default port, textfile output and a (simulated) GPU."""

from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-alternative-node")]

UNIT = "pai-job-exporter.service"
URL = "https://127.0.0.1:9202/metrics"
CA = "/etc/pai-monitoring/tls/server.crt"
USER, PASSWORD = "prometheus", "molecule-secret"
# node_exporter's textfile directory, moved in this scenario: the exporter writes where node_exporter reads.
TEXTFILE_DIR = "/var/lib/pai-monitoring/textfile"


def _scrape(host: Any) -> str:
    status, body = pt.http_get(host, URL, USER, PASSWORD, CA)
    assert status == 200, pt.journal(host, UNIT)
    return body


def test_web_configuration_is_private_to_the_service(host: Any) -> None:
    web = host.file("/etc/pai-monitoring/job-exporter-web.yml")
    assert (web.user, web.group, web.mode) == ("root", "pai-job-exporter", 0o640)
    assert "tls_server_config:" in web.content_string
    assert "basic_auth_users:" in web.content_string
    assert "molecule-secret" not in web.content_string


def test_listens_on_the_configured_port_with_tls(host: Any) -> None:
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://0.0.0.0:9202").is_listening or host.socket("tcp://:::9202").is_listening
    assert not host.socket("tcp://0.0.0.0:9102").is_listening


def test_scrapes_need_the_password(host: Any) -> None:
    assert pt.http_get(host, URL, ca_file=CA)[0] == 401
    assert pt.http_get(host, URL, USER, "wrong", CA)[0] == 401


def test_gpu_metrics_come_from_the_nvml_library_it_was_given(host: Any) -> None:
    body = _scrape(host)
    assert pt.current_nvml_status(body) == ["ok"], pt.samples(body, "pai_gpu_nvml_status")
    utilization = pt.samples(body, "nvidiasmi_utilization_gpu")
    assert any('minor_number="0"' in line and line.endswith(" 37.0") for line in utilization), utilization
    assert 'pai_scrape_collector_success{collector="gpu"} 1' in body


def test_node_name_is_the_configured_one(host: Any) -> None:
    assert "gpu-node-17" in _scrape(host)


def test_textfile_output_lands_in_node_exporters_directory(host: Any) -> None:
    directory = host.file(TEXTFILE_DIR)
    assert (directory.group, directory.mode) == ("pai-textfile", 0o2775)
    listing = host.run(f"find {TEXTFILE_DIR} -maxdepth 1 -name '*.prom' -user pai-job-exporter -perm -0044")
    files = listing.stdout.split()
    assert files, f"no readable .prom file written by the exporter in {TEXTFILE_DIR}:\n{pt.journal(host, UNIT)}"
    assert "pai_exporter_build_info" in host.file(files[0]).content_string
    # node_exporter (TLS and basic auth on 9200 here) serves what the exporter wrote.
    status, body = pt.http_get(host, "https://127.0.0.1:9200/metrics", USER, PASSWORD, CA)
    assert status == 200
    served = pt.samples(body, "pai_exporter_build_info")
    assert any('daemon="pai-job-exporter"' in line for line in served), served


def test_unit_reaches_the_gpus_and_nothing_else(host: Any) -> None:
    props = pt.unit_properties(
        host,
        UNIT,
        "PrivateDevices",
        "DevicePolicy",
        "DeviceAllow",
        "Environment",
        "SupplementaryGroups",
        "ReadWritePaths",
        "MemoryMax",
        "CPUQuotaPerSecUSec",
    )
    assert props["PrivateDevices"] == "no"
    assert props["DevicePolicy"] == "closed"
    assert pt.device_allow(props) == pt.NVIDIA_DEVICE_CLASSES
    assert "LD_LIBRARY_PATH=/opt/nvml-sim" in props["Environment"]
    assert "PAI_NVML_SIM_SCENARIO=/opt/nvml-sim/two-gpus.conf" in props["Environment"]
    assert props["SupplementaryGroups"] == "pai-textfile"
    assert props["ReadWritePaths"] == TEXTFILE_DIR
    assert props["MemoryMax"] == str(192 * 1024**2)
    assert props["CPUQuotaPerSecUSec"] == "300ms"


def test_systemd_exposure_is_ok(host: Any) -> None:
    pt.assert_exposure(host, UNIT)
