"""Alertmanager with TLS, basic auth, gossip clustering, webhook and e-mail receivers on a non-default port."""

import json
from typing import Any

import pai_testinfra as pt
import yaml

testinfra_hosts = [pt.ssh("pai-alternative-ctl")]

UNIT = "prometheus-alertmanager.service"
BASE = "https://127.0.0.1:19093"
CA = "/etc/pai-test-tls/cert.pem"
USER, PASSWORD = "admin", "molecule-alt"


def status(host):
    code, body = pt.http_get(host, BASE + "/api/v2/status", USER, PASSWORD, CA)
    assert code == 200
    return json.loads(body)


def test_api_needs_tls_and_a_password(host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:19093").is_listening or host.socket("tcp://:::19093").is_listening
    assert pt.http_get(host, BASE + "/-/ready", ca_file=CA)[0] == 401
    assert pt.http_get(host, BASE + "/-/ready", USER, PASSWORD, CA)[0] == 200
    web = host.file("/etc/prometheus/alertmanager-web-config.yml")
    assert (web.user, web.group, web.mode) == ("root", "prometheus", 0o640)


def test_gossip_listens_on_the_configured_port(host: Any) -> None:
    pt.assert_running(host, UNIT)
    assert host.socket("tcp://127.0.0.1:19094").is_listening
    assert status(host)["cluster"]["status"] in ("ready", "settling")


def test_receivers_carry_the_webhooks_and_mail(host: Any) -> None:
    running = yaml.safe_load(status(host)["config"]["original"])
    receivers = {r["name"]: r for r in running["receivers"]}
    # Alertmanager 0.28 (Debian 13) shows webhook URLs as <secret> in its API: the URLs are checked in the file it
    # loaded, that the receivers have their webhooks in the running configuration.
    loaded = yaml.safe_load(host.file("/etc/prometheus/alertmanager.yml").content_string)
    urls = {r["name"]: [w["url"] for w in r.get("webhook_configs", [])] for r in loaded["receivers"]}
    assert urls["pai-fatal"] == ["http://127.0.0.1:5001/fatal"]
    assert urls["pai-default"] == ["http://127.0.0.1:5001/alerts"]
    assert receivers["pai-fatal"]["webhook_configs"], receivers["pai-fatal"]
    assert receivers["pai-default"]["webhook_configs"], receivers["pai-default"]
    original = status(host)["config"]["original"]
    assert "gpu-admins@example.org" in original
    assert "smtp.example.org:587" in original


def test_flags_and_budget(host: Any) -> None:
    flags = host.file("/etc/default/prometheus-alertmanager").content_string
    assert "--data.retention=24h" in flags
    assert "--web.external-url=https://alertmanager.example.org/" in flags
    assert "--web.config.file=/etc/prometheus/alertmanager-web-config.yml" in flags
    assert pt.unit_properties(host, UNIT, "MemoryMax")["MemoryMax"] == str(256 * 1024**2)
    pt.assert_exposure(host, UNIT)
