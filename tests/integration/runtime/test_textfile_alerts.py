"""Textfile output and node_exporter gaps through the real node_exporter and Prometheus (Debian's binaries).

node_exporter serves a textfile until someone removes it, however old. The exporters rewrite theirs at least once
per collector interval, so node_exporter's ``node_textfile_mtime_seconds`` ages only when the writer is gone, and
``PaiTextfileStale`` fires on that age. A firing node alert holds while node_exporter itself is down.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import LoopbackDaemon
from tests.support.exporter import REPO, Exporter, start_exporter
from tests.support.prometheus import Prometheus, running_prometheus, tuned_rule_file

pytestmark = pytest.mark.integration

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
WAIT_S = 60.0
STALE_AFTER_S = 5  # the shipped rule says 300 s; the test's exporter rewrites its file every 0.5 s


def shipped_expr(file: str, alert: str) -> str:
    for group in yaml.safe_load((REPO / "rules" / file).read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                return str(rule["expr"])
    raise KeyError(alert)


class NodeExporter(LoopbackDaemon):
    """Debian's node_exporter on loopback with only its textfile collector."""

    def __init__(self, textfile_dir: Path) -> None:
        super().__init__()
        self.textfile_dir = textfile_dir

    def argv(self) -> list[str]:
        return [
            NODE_EXPORTER,
            f"--web.listen-address={self.address}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={self.textfile_dir}",
        ]


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[NodeExporter]:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    exporter = NodeExporter(textfiles)
    exporter.start()
    yield exporter
    exporter.close()


def job_exporter(textfile_dir: Path) -> Exporter:
    return start_exporter(
        [
            "--no-collector.gpu",
            "--no-collector.jobs",
            "--no-collector.node_health",
            "--collector.steady",
            "--collector.steady.interval=0.5",
            f"--textfile.directory={textfile_dir}",
        ]
    )


def wait(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"gave up after {timeout:g}s waiting for {what}")


def quiet_for(prom: Prometheus, name: str, expr_seen: str, samples: int) -> None:
    """No ``name`` pending or firing at any poll until ``expr_seen`` has been scraped ``samples`` times."""
    deadline = time.monotonic() + WAIT_S
    while not prom.query(f"count_over_time(({expr_seen})[30s:1s]) >= {samples}"):
        assert not prom.matching_alerts(name), f"{name} active while healthy: {prom.alerts()}"
        assert time.monotonic() < deadline, f"{expr_seen} not seen {samples} times"
        time.sleep(0.25)
    assert not prom.matching_alerts(name), f"{name} active while healthy: {prom.alerts()}"


def test_a_killed_exporter_leaves_a_stale_textfile_that_pages(node_exporter: NodeExporter, tmp_path: Path) -> None:
    expr = re.sub(r">\s*300\b", f"> {STALE_AFTER_S}", shipped_expr("alerts/exporters.rules.yml", "PaiTextfileStale"))
    assert expr != shipped_expr("alerts/exporters.rules.yml", "PaiTextfileStale")
    rules = [tuned_rule_file(tmp_path, "alerts/exporters.rules.yml", {"PaiTextfileStale": {"expr": expr, "for": "1s"}})]
    exporter = job_exporter(node_exporter.textfile_dir)
    try:
        with running_prometheus({"node": [node_exporter.address]}, rules) as prom:
            mtime = 'node_textfile_mtime_seconds{file=~".*pai_job_exporter.prom"}'
            series = prom.wait_for_series(mtime)
            assert series[0]["metric"]["file"] in (
                "pai_job_exporter.prom",
                str(node_exporter.textfile_dir / "pai_job_exporter.prom"),
            )
            quiet_for(prom, "PaiTextfileStale", mtime, samples=2 * STALE_AFTER_S)

            exporter.process.send_signal(signal.SIGKILL)  # a crash: nothing can remove the file
            exporter.stop()
            assert (node_exporter.textfile_dir / "pai_job_exporter.prom").exists()
            assert prom.query('pai_test_steady{job="node"}'), "node_exporter still serves the frozen values"
            alert = prom.wait_for_alert("PaiTextfileStale", labels={"instance": node_exporter.address})
            assert alert["labels"]["file"] == series[0]["metric"]["file"]

            exporter = job_exporter(node_exporter.textfile_dir)  # restarted: fresh again
            wait("the alert to resolve", lambda: not prom.matching_alerts("PaiTextfileStale"))
    finally:
        exporter.stop()


def test_a_firing_node_alert_holds_while_node_exporter_is_down(node_exporter: NodeExporter, tmp_path: Path) -> None:
    (node_exporter.textfile_dir / "broken.prom").write_text("this is not the exposition format\n")
    rules = [tuned_rule_file(tmp_path, "alerts/node.rules.yml", {"NodeTextFileCollectorScrapeError": {"for": "1s"}})]
    with running_prometheus({"node": [node_exporter.address]}, rules) as prom:
        labels = {"instance": node_exporter.address}
        prom.wait_for_alert("NodeTextFileCollectorScrapeError", labels=labels)
        node_exporter.stop()
        prom.wait_for_series('up{job="node"} == 0')
        assert prom.query("node_textfile_scrape_error") == []  # a real gap: the series are gone
        gap = 'count_over_time((up{job="node"} == 0)[30s:1s]) >= 10'
        deadline = time.monotonic() + WAIT_S
        while not prom.query(gap):  # ten evaluations without data
            assert prom.matching_alerts("NodeTextFileCollectorScrapeError", "firing", labels), prom.alerts()
            assert time.monotonic() < deadline
            time.sleep(0.25)
        assert prom.matching_alerts("NodeTextFileCollectorScrapeError", "firing", labels)
