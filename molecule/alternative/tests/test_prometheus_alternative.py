"""Prometheus with TLS, basic auth, a non-default port, retention, external labels, remote_write and rule tuning."""

import json
import time
from typing import Any

import pai_testinfra as pt
import yaml

testinfra_hosts = [pt.ssh("pai-alternative-ctl")]

UNIT = "prometheus.service"
BASE = "https://127.0.0.1:19090"
CA = "/etc/pai-test-tls/cert.pem"
USER, PASSWORD = "admin", "molecule-alt"
NODE, CTL = "pai-alternative-node", "pai-alternative-ctl"
TIMEOUT_S = 90
POLL_S = 2


def api(host, path):
    status, body = pt.http_get(host, BASE + path, USER, PASSWORD, CA)
    assert status == 200, f"GET {path}: HTTP {status}"
    return json.loads(body)["data"]


def alerting_rules(host):
    groups = api(host, "/api/v1/rules")["groups"]
    return {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}


def test_web_interface_needs_tls_and_a_password(host: Any) -> None:
    assert host.socket("tcp://0.0.0.0:19090").is_listening or host.socket("tcp://:::19090").is_listening
    assert pt.http_get(host, BASE + "/-/ready", ca_file=CA)[0] == 401
    assert pt.http_get(host, BASE + "/-/ready", USER, "wrong", CA)[0] == 401
    assert pt.http_get(host, BASE + "/-/ready", USER, PASSWORD, CA)[0] == 200
    web = host.file("/etc/prometheus/web-config.yml")
    assert (web.user, web.group, web.mode) == ("root", "prometheus", 0o640)
    assert "molecule-alt" not in web.content_string


def test_flags_reach_the_running_server(host: Any) -> None:
    flags = api(host, "/api/v1/status/flags")
    assert flags["web.listen-address"] == "0.0.0.0:19090"
    assert flags["storage.tsdb.retention.time"] == "2d"
    # Prometheus reads GB as 2^30 bytes and reports it as GiB.
    assert flags["storage.tsdb.retention.size"] == "1GiB"
    assert flags["rules.alert.resend-delay"] == "2s"
    assert flags["web.external-url"] == "https://prometheus.example.org/"
    assert flags["web.config.file"] == "/etc/prometheus/web-config.yml"


def test_external_labels_and_remote_write_are_configured(host: Any) -> None:
    config = yaml.safe_load(api(host, "/api/v1/status/config")["yaml"])
    assert config["global"]["external_labels"] == {"cluster": "molecule", "site": "alternative"}
    assert config["remote_write"][0]["url"] == "http://127.0.0.1:8428/api/v1/write"
    assert config["remote_write"][0]["queue_config"]["max_samples_per_send"] == 500


def test_alert_overrides_tune_the_shipped_rules(host: Any) -> None:
    rules = alerting_rules(host)
    assert "NvidiaMemoryLeak" not in rules
    ecc = rules["NvidiaSmiDoubleEccError"]
    assert ecc["duration"] == 600
    assert ecc["labels"]["severity"] == "error"
    assert ecc["labels"]["team"] == "gpu-ops"
    assert "NvidiaZombieProcess" in rules


def test_site_rule_file_is_loaded_and_evaluated(host: Any) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        alerts = api(host, "/api/v1/alerts")["alerts"]
        if any(a["labels"]["alertname"] == "SiteAlwaysFiring" and a["state"] == "firing" for a in alerts):
            break
        assert time.monotonic() < deadline, f"SiteAlwaysFiring never fired: {alerts}"
        time.sleep(POLL_S)
    assert host.file("/etc/prometheus/rules/site/site.rules.yml").exists


def test_own_scrape_goes_through_tls_and_basic_auth(host: Any) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        own = [t for t in api(host, "/api/v1/targets")["activeTargets"] if t["labels"]["job"] == "prometheus"]
        if own and own[0]["health"] == "up":
            break
        assert time.monotonic() < deadline, f"prometheus target not up: {own}"
        time.sleep(POLL_S)
    assert own[0]["scrapeUrl"] == "https://pai-alternative-ctl:19090/metrics"


def test_every_exporter_is_scraped_over_tls_with_basic_auth(host: Any) -> None:
    expected = {
        ("node", f"{NODE}:9200"),
        ("node", f"{CTL}:9200"),
        ("pai_job_exporter", f"{NODE}:9202"),
        ("pai_watchdog", f"{CTL}:9201"),
        ("prometheus", f"{CTL}:19090"),
        ("alertmanager", f"{CTL}:19093"),
    }
    active = pt.targets_when_up(lambda: api(host, "/api/v1/targets")["activeTargets"], expected)
    found = {(t["labels"]["job"], t["labels"]["instance"]) for t in active}
    assert found == expected, f"unexpected targets: {found - expected}"
    assert all(t["scrapeUrl"].startswith("https://") for t in active), [t["scrapeUrl"] for t in active]


def test_resource_budget_and_exposure(host: Any) -> None:
    props = pt.unit_properties(host, UNIT, "MemoryMax", "CPUQuotaPerSecUSec", "ProtectSystem", "ReadWritePaths")
    assert props["MemoryMax"] == str(1024**3)
    assert props["CPUQuotaPerSecUSec"] == "1s"
    assert props["ProtectSystem"] == "strict"
    assert props["ReadWritePaths"] == "/var/lib/prometheus/metrics2"
    pt.assert_exposure(host, UNIT)
