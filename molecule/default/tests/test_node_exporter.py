"""What an operator checks after deploying node_exporter from Debian's package with the role's defaults."""

from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-default-node")]

UNIT = "prometheus-node-exporter.service"
URL = "http://127.0.0.1:9100/metrics"


def test_package_and_flags(host: Any) -> None:
    assert host.package("prometheus-node-exporter").is_installed
    flags = host.file("/etc/default/prometheus-node-exporter")
    assert flags.user == "root"
    assert flags.mode == 0o644
    assert "--web.listen-address=:9100" in flags.content_string
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in flags.content_string
    assert "--collector.systemd " in flags.content_string


def test_service_user_has_no_login_shell(host: Any) -> None:
    user = host.user("prometheus")
    assert user.shell in ("/usr/sbin/nologin", "/bin/false")
    assert user.uid < 1000


def test_textfile_directory_is_shared_with_the_job_exporter(host: Any) -> None:
    directory = host.file("/var/lib/prometheus/node-exporter")
    assert directory.is_directory
    assert directory.user == "root"
    assert directory.group == "pai-textfile"
    assert directory.mode == 0o2775


def test_hardening_drop_in(host: Any) -> None:
    pt.assert_drop_in_hardening(
        host,
        UNIT,
        {
            "Restart": "always",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "read-only",
            "PrivateTmp": "yes",
            "MemoryMax": str(128 * 1024**2),
            "User": "prometheus",
        },
    )


def test_service_runs_and_listens_on_every_address(host: Any) -> None:
    # The shipped default ":9100": Prometheus on the control guest scrapes it (test_prometheus.py).
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://0.0.0.0:9100").is_listening or host.socket("tcp://:::9100").is_listening
    assert not host.socket("tcp://127.0.0.1:9200").is_listening


def test_metrics_report_our_units_and_textfiles(host: Any) -> None:
    # A file an operator drops into the textfile directory shows up on the next scrape.
    host.run("echo 'pai_molecule_probe 42' > /var/lib/prometheus/node-exporter/probe.prom")
    status, body = pt.http_get(host, URL)
    assert status == 200
    assert "pai_molecule_probe 42" in body
    assert 'node_systemd_unit_state{name="prometheus-node-exporter.service",state="active",type="simple"} 1' in body
    # The filter keeps the systemd collector to the suite's units.
    assert 'name="dbus.service"' not in body
    assert 'node_scrape_collector_success{collector="timex"} 1' in body
    assert {"node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_textfile_scrape_error"} <= (
        pt.metric_families(body)
    )


def test_systemd_exposure_is_ok(host: Any) -> None:
    pt.assert_exposure(host, UNIT)
