"""node_exporter from a release archive (sha256 pinned), with TLS, basic auth, port 9200 and other collectors.

An archive install without a sha256 is refused in preflight, and an archive that fails its sha256 does not stay in
the download cache: local plays in tests/unit/test_role_preflight.py. Here: a wrong sha256 leaves the running
node_exporter alone."""

import os
from pathlib import Path
from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-alternative-node")]

UNIT = "prometheus-node-exporter.service"
URL = "https://127.0.0.1:9200/metrics"
CA = "/etc/pai-monitoring/tls/server.crt"
BINARY = "/opt/pai-monitoring/node-exporter/node_exporter-1.5.0.linux-amd64/node_exporter"


def _scrape(host: Any) -> str:
    status, body = pt.http_get(host, URL, "prometheus", "molecule-secret", CA)
    assert status == 200, pt.journal(host, UNIT)
    return body


def test_installed_from_the_archive_not_the_package(host: Any) -> None:
    assert not host.package("prometheus-node-exporter").is_installed
    binary = host.file(BINARY)
    assert (binary.user, binary.group) == ("root", "root")
    assert binary.mode & 0o022 == 0, "the binary must not be writable by group or others"
    unit = host.file("/etc/systemd/system/prometheus-node-exporter.service")
    assert unit.content_string.startswith("#\n# Ansible managed")
    assert f"ExecStart={BINARY} $ARGS" in unit.content_string


def test_service_user_has_no_login_shell(host: Any) -> None:
    user = host.user("prometheus")
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000


def test_web_configuration_is_private_to_the_service(host: Any) -> None:
    web = host.file("/etc/pai-monitoring/node-exporter-web.yml")
    assert (web.user, web.group, web.mode) == ("root", "prometheus", 0o640)


def test_listens_on_the_configured_port_and_needs_the_password(host: Any) -> None:
    pt.assert_running(host, UNIT)
    assert not host.socket("tcp://127.0.0.1:9100").is_listening
    assert pt.http_get(host, URL, ca_file=CA)[0] == 401
    assert pt.http_get(host, URL, "prometheus", "wrong", CA)[0] == 401


def test_collectors_follow_the_variables(host: Any) -> None:
    body = _scrape(host)
    assert 'node_scrape_collector_success{collector="processes"} 1' in body
    assert 'collector="mdadm"' not in body
    assert 'collector="systemd"' not in body
    assert "node_processes_state" in pt.metric_families(body)


def test_textfile_directory_moved(host: Any) -> None:
    directory = host.file("/var/lib/pai-monitoring/textfile")
    assert (directory.group, directory.mode) == ("pai-textfile", 0o2775)
    flags = host.file("/etc/default/prometheus-node-exporter").content_string
    assert "--collector.textfile.directory=/var/lib/pai-monitoring/textfile" in flags


def test_hardening_drop_in_applies_to_our_unit(host: Any) -> None:
    props = pt.unit_properties(host, UNIT, "User", "Restart", "NoNewPrivileges", "ProtectSystem", "MemoryMax")
    assert props == {
        "User": "prometheus",
        "Restart": "always",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "MemoryMax": str(96 * 1024**2),
    }


def test_systemd_exposure_is_ok(host: Any) -> None:
    pt.assert_exposure(host, UNIT)


def test_archive_with_a_wrong_checksum_is_refused(host: Any, tmp_path: Path) -> None:
    pid = pt.main_pid(host, UNIT)
    archive = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "node_exporter-1.5.0.linux-amd64.tar.gz"
    run = pt.run_playbook(
        [("gpu_nodes", "node_exporter")],
        {
            "node_exporter_install_method": "archive",
            "node_exporter_archive_url": f"file://{archive}",
            "node_exporter_archive_sha256": "0" * 64,
            "node_exporter_archive_cache_dir": str(tmp_path),
        },
    )
    assert run.returncode != 0
    assert "checksum" in run.output.lower(), run.output[-3000:]
    assert not (tmp_path / archive.name).exists(), "an archive that failed its checksum must not stay in the cache"
    assert pt.main_pid(host, UNIT) == pid
