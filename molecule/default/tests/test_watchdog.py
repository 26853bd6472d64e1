"""What an operator checks after deploying pai-watchdog with a kubeconfig (API: the stand-in in the guest).

A kubeconfig that does not exist is refused in preflight: tests/unit/test_role_preflight.py; that such a play leaves
the running watchdog and its kubeconfig alone: test_failed_plays.py."""

from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-default-ctl")]

UNIT = "pai-watchdog.service"
URL = "http://127.0.0.1:9101/metrics"
CREDENTIALS = "/etc/pai-monitoring/watchdog-credentials"


def test_service_user_has_no_login_shell(host: Any) -> None:
    user = host.user("pai-watchdog")
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000


def test_kubeconfig_is_readable_by_the_service_user_only(host: Any) -> None:
    directory = host.file(CREDENTIALS)
    assert (directory.user, directory.mode) == ("pai-watchdog", 0o700)
    kubeconfig = host.file(f"{CREDENTIALS}/kubeconfig")
    assert (kubeconfig.user, kubeconfig.group, kubeconfig.mode) == ("pai-watchdog", "pai-watchdog", 0o600)
    assert "server: http://127.0.0.1:6443" in kubeconfig.content_string


def test_rbac_manifest_is_there_for_the_cluster_admin(host: Any) -> None:
    manifest = host.file("/etc/pai-monitoring/rbac.yml")
    assert (manifest.user, manifest.mode) == ("root", 0o644)
    assert "ClusterRole" in manifest.content_string


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
        "PrivateUsers",
        "CapabilityBoundingSet",
        "ExecStart",
    )
    assert props["User"] == "pai-watchdog"
    assert props["Restart"] == "always"
    assert (props["NoNewPrivileges"], props["ProtectSystem"], props["ProtectHome"]) == ("yes", "strict", "yes")
    # watchdog_private_users is false in this scenario: the guests cannot create user namespaces.
    assert (props["PrivateTmp"], props["PrivateUsers"]) == ("yes", "no")
    assert props["CapabilityBoundingSet"] == ""
    assert f"--collector.kubernetes.kubeconfig={CREDENTIALS}/kubeconfig" in props["ExecStart"]


def test_service_runs_and_listens_on_every_address(host: Any) -> None:
    # The shipped default ":9101": Prometheus scrapes it by the guest's name (test_prometheus.py).
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://0.0.0.0:9101").is_listening or host.socket("tcp://:::9101").is_listening
    assert not host.socket("tcp://0.0.0.0:9201").is_listening


def test_metrics_show_the_cluster_behind_the_api(host: Any) -> None:
    status, body = pt.http_get(host, URL)
    assert status == 200, pt.journal(host, UNIT)
    assert 'daemon="pai-watchdog"' in body
    api = pt.samples(body, "k8s_api_server_count")
    assert any('error="ok"' in line and line.endswith(" 1.0") for line in api), (api, pt.journal(host, UNIT))
    nodes = pt.samples(body, "pai_node_count")
    assert len(nodes) == 3, nodes


def test_systemd_exposure_is_ok(host: Any) -> None:
    pt.assert_exposure(host, UNIT)
