"""rules/external-metrics.yml against the real Debian binaries on this machine, so that the list cannot rot.

node_exporter runs with the collectors the node_exporter role enables (defaults, textfile with a file in its
directory); Prometheus scrapes itself, node_exporter and Alertmanager, evaluates a rule and sends its alert to the
Alertmanager. Each name listed for a program must be on that program's /metrics page (or, for the series Prometheus
writes itself, in its database). The cluster names come from two Alertmanagers gossiping on loopback, as the
alertmanager role runs them with two or more monitoring hosts. The systemd collector's names need systemd as PID 1;
where it is not, they are checked on the sandbox's guests (tests/e2e/test_alerts.py), and this test says so instead
of passing silently.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.test_alertmanager_outage import Alertmanager
from tests.support.exporter import REPO, free_port
from tests.support.prometheus import Prometheus, running_prometheus
from tests.unit.test_rules import render_alertmanager_config

pytestmark = pytest.mark.integration

EXTERNAL = yaml.safe_load((REPO / "rules" / "external-metrics.yml").read_text(encoding="utf-8"))
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", re.MULTILINE)
WAIT_S = 60.0


def exposed(address: str) -> set[str]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return set(SAMPLE.findall(response.read().decode()))


@pytest.fixture(scope="module")
def node_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    textfiles = tmp_path_factory.mktemp("textfiles")
    (textfiles / "site.prom").write_text("site_value 1\n")
    address = f"127.0.0.1:{free_port()}"
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed after the module's tests
    process = subprocess.Popen(
        ["/usr/bin/prometheus-node-exporter", f"--web.listen-address={address}", "--collector.systemd",
         f"--collector.textfile.directory={textfiles}"],
        stdout=log, stderr=log,
    )  # fmt: skip
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            exposed(address)
            break
        except OSError:
            assert process.poll() is None, "node_exporter exited"
            assert time.monotonic() < deadline, "node_exporter did not start"
            time.sleep(0.1)
    yield address
    process.terminate()
    process.wait(30)
    log.close()


@pytest.fixture(scope="module")
def stack(node_exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, str]]:
    directory = tmp_path_factory.mktemp("external-metrics")
    config = directory / "alertmanager.yml"
    config.write_text(render_alertmanager_config({}))
    alertmanager = Alertmanager(config, directory / "alertmanager-data")
    alertmanager.start()
    rules = directory / "always.rules.yml"
    always = {"alert": "AlwaysFiring", "expr": "vector(1)", "labels": {"severity": "info"}}
    rules.write_text(yaml.safe_dump({"groups": [{"name": "always", "rules": [always]}]}))
    try:
        with running_prometheus(
            {"node": [node_exporter], "alertmanager": [alertmanager.address]},
            [rules],
            alertmanagers=[alertmanager.address],
            scrape_self=True,
        ) as prom:
            prom.wait_for_alert("AlwaysFiring")
            prom.wait_for_series("prometheus_notifications_sent_total > 0")
            yield prom, alertmanager.address
    finally:
        alertmanager.close()


def cluster_members(address: str) -> float | None:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        found = re.search(r"^alertmanager_cluster_members (\S+)$", response.read().decode(), re.MULTILINE)
    return None if found is None else float(found.group(1))


@pytest.fixture(scope="module")
def alertmanager_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two Alertmanagers in one gossip cluster on loopback, each started with the other as its peer."""
    directory = tmp_path_factory.mktemp("alertmanager-cluster")
    config = directory / "alertmanager.yml"
    config.write_text(render_alertmanager_config({}))
    ports = [free_port(), free_port()]
    members = [
        Alertmanager(config, directory / f"data-{i}", cluster_port=ports[i], peers=[f"127.0.0.1:{ports[1 - i]}"])
        for i in range(2)
    ]
    try:
        for member in members:
            member.start()
        addresses = [member.address for member in members]
        deadline = time.monotonic() + WAIT_S
        while any(cluster_members(address) != 2 for address in addresses):
            assert time.monotonic() < deadline, "the two Alertmanagers did not form one cluster"
            time.sleep(0.2)
        yield addresses
    finally:
        for member in members:
            member.close()


def test_node_exporter_exposes_its_listed_names(node_exporter: str) -> None:
    names = set(EXTERNAL["node_exporter"]) | set(EXTERNAL["node_exporter_textfile"])  # site.prom is in its directory
    assert sorted(names - exposed(node_exporter)) == []


def test_the_systemd_names_need_systemd(node_exporter: str) -> None:
    names = set(EXTERNAL["node_exporter_systemd"])
    if Path("/run/systemd/system").is_dir():  # booted with systemd: node_exporter must expose them here too
        assert sorted(names - exposed(node_exporter)) == []
    else:
        assert not names & exposed(node_exporter), "listed as systemd-only, but exposed without systemd"


def test_prometheus_exposes_its_listed_names(stack: tuple[Prometheus, str]) -> None:
    prom, _ = stack
    assert sorted(set(EXTERNAL["prometheus"]) - exposed(f"127.0.0.1:{prom.port}")) == []


def test_prometheus_writes_its_listed_series(stack: tuple[Prometheus, str]) -> None:
    prom, _ = stack
    assert [name for name in EXTERNAL["prometheus_series"] if not prom.query(f"count({name})")] == []


def test_alertmanager_exposes_its_listed_names(stack: tuple[Prometheus, str]) -> None:
    _, alertmanager = stack
    assert sorted(set(EXTERNAL["alertmanager"]) - exposed(alertmanager)) == []


def test_clustered_alertmanagers_expose_the_cluster_names(alertmanager_pair: list[str]) -> None:
    assert {
        address: sorted(set(EXTERNAL["alertmanager_cluster"]) - exposed(address)) for address in alertmanager_pair
    } == {address: [] for address in alertmanager_pair}


def test_every_program_of_the_list_is_checked() -> None:
    assert set(EXTERNAL) == {
        "node_exporter",
        "node_exporter_textfile",
        "node_exporter_systemd",
        "prometheus",
        "prometheus_series",
        "alertmanager",
        "alertmanager_cluster",
    }
