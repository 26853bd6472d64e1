"""A real Prometheus (Debian's binary) on 127.0.0.1 for integration tests: scrape our daemons, evaluate rules.

The tests that need to see an alert go pending, fire and resolve through the real rule engine, or a series stay
or vanish across a collection gap, start one with the targets and rule files they need::

    with running_prometheus(targets={"pai_job_exporter": [exporter.address]}, rule_files=[...]) as prom:
        prom.wait_for_alert("GpuNvmlNotWorking", state="firing", labels={"minor_number": "0"})

Intervals are short (scrape and evaluation 1 s by default) so that alerts move in seconds; every wait is a liveness
bound, not a timed assertion.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from tests.support.daemon import finish
from tests.support.exporter import REPO, free_port
from tests.support.modules import load_file

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
START_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 5.0
POLL_S = 0.25


@dataclass
class Prometheus:
    """One running Prometheus; ``url`` is its HTTP API on loopback."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    log: IO[bytes]
    output: str = field(default="")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise when Prometheus reports an error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=HTTP_TIMEOUT_S) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} failed: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector."""
        return list(self.api("query", {"query": expr})["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Every active (pending or firing) alert, as ``/api/v1/alerts`` reports it."""
        return list(self.api("alerts")["alerts"])

    def matching_alerts(
        self, name: str, state: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return [
            alert
            for alert in self.alerts()
            if alert["labels"].get("alertname") == name
            and (state is None or alert["state"] == state)
            and all(alert["labels"].get(k) == v for k, v in (labels or {}).items())
        ]

    def wait_for_alert(
        self, name: str, state: str = "firing", labels: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until an alert of that name (and labels) is in ``state``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching_alerts(name, state, labels)
            if found:
                return found[0]
            time.sleep(POLL_S)
        raise AssertionError(f"{name}{dict(labels or {})} not {state} within {timeout:.0f}s; active: {self.alerts()}")

    def wait_for_series(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns at least one sample; return the result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(POLL_S)
        raise AssertionError(f"{expr} returned nothing within {timeout:.0f}s")

    def stop(self) -> None:
        self.output = finish(self.process, self.log) or self.output


def write_config(
    directory: Path,
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path],
    interval: str,
    target_labels: Mapping[str, Mapping[str, str]] | None = None,
    alertmanagers: Sequence[str] = (),
) -> Path:
    """A prometheus.yml with one static job per entry of ``targets`` (job name -> ``host:port`` list).

    ``target_labels`` adds labels to a job's targets (as the roles add ``pai_service_name``); ``alertmanagers``
    (``host:port``) are where alerts go, statically configured as the prometheus role does.
    """
    config: dict[str, object] = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {
                        "targets": list(addresses),
                        **({"labels": dict(target_labels[job])} if job in (target_labels or {}) else {}),
                    }
                ],
            }
            for job, addresses in targets.items()
        ],
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tuned_rule_file(directory: Path, shipped: str, overrides: Mapping[str, Mapping[str, object]]) -> Path:
    """A shipped rule file (``alerts/kubernetes.rules.yml``) with ``prometheus_alert_overrides`` applied by the
    prometheus role's own filter, so tests run the shipped expressions with shorter ``for:`` durations."""
    module = load_file(REPO / "plugins/filter/rules.py", "pai_rules_filter")
    path = directory / shipped.replace("/", "-")
    path.write_text(module.apply_overrides((REPO / "rules" / shipped).read_text(encoding="utf-8"), overrides))
    return path


@contextmanager
def running_prometheus(
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    target_labels: Mapping[str, Mapping[str, str]] | None = None,
    alertmanagers: Sequence[str] = (),
    scrape_self: bool = False,
) -> Iterator[Prometheus]:
    """Start Prometheus on a free loopback port with its own storage; stop it and remove the storage after."""
    directory = Path(tempfile.mkdtemp(prefix="pai-prometheus-"))
    port = free_port()
    if scrape_self:  # as the prometheus role does: job prometheus, pai_service_name prometheus
        targets = {**targets, "prometheus": [f"127.0.0.1:{port}"]}
        target_labels = {**(target_labels or {}), "prometheus": {"pai_service_name": "prometheus"}}
    config = write_config(directory, targets, rule_files, interval, target_labels, alertmanagers)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Prometheus.stop
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
        ],
        stdout=log,
        stderr=log,
    )
    prometheus = Prometheus(process, port, directory, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                prometheus.stop()
                raise RuntimeError(f"prometheus exited {process.returncode}: {prometheus.output}")
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=HTTP_TIMEOUT_S) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready within {START_TIMEOUT_S:.0f}s")
            time.sleep(POLL_S)
        yield prometheus
    finally:
        prometheus.stop()
        shutil.rmtree(directory, ignore_errors=True)
