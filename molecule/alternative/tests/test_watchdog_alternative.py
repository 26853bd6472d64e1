"""pai-watchdog with a token and CA (API over HTTPS), TLS and basic auth on port 9201."""

from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-alternative-ctl")]

UNIT = "pai-watchdog.service"
URL = "https://127.0.0.1:9201/metrics"
CA = "/etc/pai-monitoring/tls/server.crt"
CREDENTIALS = "/etc/pai-monitoring/watchdog-credentials"


def test_token_and_ca_are_readable_by_the_service_user_only(host: Any) -> None:
    for name in ("token", "ca.crt"):
        file = host.file(f"{CREDENTIALS}/{name}")
        assert (file.user, file.group, file.mode) == ("pai-watchdog", "pai-watchdog", 0o600), name
    assert not host.file(f"{CREDENTIALS}/kubeconfig").exists


def test_unit_uses_the_token_and_ca(host: Any) -> None:
    exec_start = pt.unit_properties(host, UNIT, "ExecStart")["ExecStart"]
    assert "--collector.kubernetes.api-url=https://127.0.0.1:6443" in exec_start
    assert f"--collector.kubernetes.token-file={CREDENTIALS}/token" in exec_start
    assert f"--collector.kubernetes.ca-file={CREDENTIALS}/ca.crt" in exec_start
    assert "--web.config.file=/etc/pai-monitoring/watchdog-web.yml" in exec_start


def test_scrapes_need_tls_and_the_password(host: Any) -> None:
    pt.assert_running(host, UNIT)
    assert pt.http_get(host, URL, ca_file=CA)[0] == 401
    status, body = pt.http_get(host, URL, "prometheus", "molecule-secret", CA)
    assert status == 200
    api = pt.samples(body, "k8s_api_server_count")
    assert any('error="ok"' in line and line.endswith(" 1.0") for line in api), (api, pt.journal(host, UNIT))


def test_budget(host: Any) -> None:
    props = pt.unit_properties(host, UNIT, "MemoryMax", "CPUQuotaPerSecUSec")
    assert props == {"MemoryMax": str(192 * 1024**2), "CPUQuotaPerSecUSec": "250ms"}


def test_systemd_exposure_is_ok(host: Any) -> None:
    pt.assert_exposure(host, UNIT)
