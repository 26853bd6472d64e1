"""The only Alertmanager of a static configuration goes down and comes back (Debian's Prometheus and Alertmanager).

While it is down nothing can be delivered: PrometheusNotConnectedToAlertmanagers fires on Prometheus' /alerts page
(with a static configuration "discovered" stays 1, so the old expression never fired). When it is back, the stale
"Alertmanager is down" must not be delivered as news, and PrometheusAlertsNotDelivered tells people after the fact.
The Alertmanager runs the configuration the alertmanager role renders; a local webhook records what it sends.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon import LoopbackDaemon
from tests.support.exporter import REPO
from tests.support.prometheus import running_prometheus, tuned_rule_file
from tests.unit.test_rules import render_alertmanager_config

pytestmark = pytest.mark.integration

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
WAIT_S = 90.0
MONITORING_RULES = yaml.safe_load((REPO / "rules" / "alerts" / "monitoring.rules.yml").read_text(encoding="utf-8"))


def short_windows(alert: str) -> str:
    """The shipped expression with its 5-minute windows cut to 10 s, so that a recovery shows within the test."""
    (expr,) = [r["expr"] for g in MONITORING_RULES["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert "[5m]" in expr
    return str(expr).replace("[5m]", "[10s]")


class Webhook(ThreadingHTTPServer):
    """Records every notification Alertmanager posts: (alertname, status) pairs in arrival order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.received += [(a["labels"]["alertname"], a["status"]) for a in body["alerts"]]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


class Alertmanager(LoopbackDaemon):
    """Debian's Alertmanager on loopback; gossip off unless ``cluster_port`` is given (then it joins ``peers``)."""

    def __init__(self, config: Path, storage: Path, cluster_port: int | None = None, peers: Sequence[str] = ()) -> None:
        super().__init__()
        self.config = config
        self.storage = storage
        self.cluster = "" if cluster_port is None else f"127.0.0.1:{cluster_port}"
        self.peers = tuple(peers)

    def argv(self) -> list[str]:
        return [
            ALERTMANAGER,
            f"--config.file={self.config}",
            f"--storage.path={self.storage}",
            f"--web.listen-address={self.address}",
            f"--cluster.listen-address={self.cluster}",
            *(f"--cluster.peer={peer}" for peer in self.peers),
        ]

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2).close()
            except OSError:
                assert time.monotonic() < deadline, "Alertmanager did not start"
                time.sleep(0.1)
            else:
                return


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def alertmanager(webhook: Webhook, tmp_path: Path) -> Iterator[Alertmanager]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        render_alertmanager_config(
            {
                "alertmanager_webhook_url": webhook.url,
                "alertmanager_group_wait": "1s",  # the sandbox's settings: notifications within seconds
                "alertmanager_group_interval": "5s",
            }
        )
    )
    manager = Alertmanager(config, tmp_path / "alertmanager-data")
    manager.start()
    yield manager
    manager.close()


def wait_until(what: str, check: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.25)


def test_an_alertmanager_outage_pages_once_it_can_and_not_with_stale_news(
    alertmanager: Alertmanager, webhook: Webhook, tmp_path: Path
) -> None:
    overrides: dict[str, dict[str, object]] = {
        "AlertmanagerNotUp": {"for": "2s"},
        "PrometheusNotConnectedToAlertmanagers": {
            "for": "2s",
            "expr": short_windows("PrometheusNotConnectedToAlertmanagers"),
        },
        "PrometheusAlertsNotDelivered": {"for": "1s", "expr": short_windows("PrometheusAlertsNotDelivered")},
        "PaiMonitoringHeartbeat": {"enabled": False},  # off, as the prometheus role deploys it by default
    }
    rules = [tuned_rule_file(tmp_path, "alerts/monitoring.rules.yml", overrides)]
    with running_prometheus(
        {"alertmanager": [alertmanager.address]},
        rules,
        target_labels={"alertmanager": {"pai_service_name": "alertmanager"}},
        alertmanagers=[alertmanager.address],
        scrape_self=True,
    ) as prom:
        prom.wait_for_series('up{job="alertmanager"} == 1')
        prom.wait_for_series("prometheus_notifications_alertmanagers_discovered == 1")
        assert prom.alerts() == []

        alertmanager.stop()
        prom.wait_for_alert("AlertmanagerNotUp")
        not_connected = prom.wait_for_alert("PrometheusNotConnectedToAlertmanagers")
        assert not_connected["labels"]["instance"].startswith("127.0.0.1:")  # static config: discovered is still 1
        assert prom.query("prometheus_notifications_alertmanagers_discovered == 1")

        alertmanager.start()
        wait_until(
            "the after-the-fact notification",
            lambda: ("PrometheusAlertsNotDelivered", "firing") in webhook.received,
        )
        wait_until("AlertmanagerNotUp to resolve in Prometheus", lambda: not prom.matching_alerts("AlertmanagerNotUp"))
        stale = [n for n in webhook.received if n[0] in ("AlertmanagerNotUp", "PrometheusNotConnectedToAlertmanagers")]
        assert stale == [], f"stale outage alerts were delivered after the restart: {webhook.received}"
