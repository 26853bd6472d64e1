"""Injected faults travel all the way to Alertmanager's webhook receiver, and resolve when the fault is removed.

A healthy sandbox is quiet: before the first fault and again after every fault has resolved, no alert is pending
or firing. What the sandbox cannot satisfy (guests share this machine's kernel) is switched off in its inventory,
each with the reason (``Sandbox.inventory()``), never filtered out here.

All faults are injected at once (each on its own node, GPU or target, so they do not mask each other), then all are
removed; the time from injection to the webhook receiving the firing (and, after removal, the resolved)
notification is printed as a table and written to .cache/e2e-alert-latency.md. The sandbox inventory shortens the
alerts' ``for:`` (10 s) and intervals (scrape and evaluation 5 s, Alertmanager group_wait 1 s and group_interval 5 s);
docs/demo.md has the arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from sandbox.sandbox import REPO, SCRATCH_MOUNT, Sandbox

pytestmark = pytest.mark.e2e

FIRE_TIMEOUT_S = 150.0
RESOLVE_TIMEOUT_S = 150.0
POLL_S = 1.0
REPORT = REPO / ".cache" / "e2e-alert-latency.md"
SETTLE_TIMEOUT_S = 180.0
QUIET_WINDOW_S = 30  # seconds of Prometheus time, six evaluations, without any alert pending or firing


def active_alerts(sandbox: Sandbox) -> list[str]:
    """Every alert pending or firing, as ``Name[state]{label=value, ...}``."""
    shown = []
    for result in sandbox.query("ALERTS"):
        labels = result["metric"]
        rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "alertstate"))
        shown.append(f"{labels['alertname']}[{labels['alertstate']}]{{{rest}}}")
    return sorted(shown)


def assert_quiet(sandbox: Sandbox, when: str) -> None:
    """Every target up and every collector succeeding, then no alert pending or firing for QUIET_WINDOW_S."""
    settled = (
        f"count(min_over_time(up[{QUIET_WINDOW_S}s]) == 0) or count(pai_scrape_collector_success == 0)"
        " or count(absent(up))"
    )
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while sandbox.query(settled):
        assert time.monotonic() < deadline, f"{when}: not settled: {sandbox.query(settled)}"
        time.sleep(POLL_S)
    start = float(sandbox.query("vector(time())")[0]["value"][1])
    while float(sandbox.query("vector(time())")[0]["value"][1]) - start < QUIET_WINDOW_S:
        assert active_alerts(sandbox) == [], f"{when}: the healthy sandbox is not quiet"
        time.sleep(POLL_S)
    assert active_alerts(sandbox) == [], f"{when}: the healthy sandbox is not quiet"


@dataclass
class Fault:
    alertname: str
    what: str
    labels: dict[str, str]
    """Labels the notified alert must carry (so that an alert of another node or GPU does not count)."""
    fired_after: float | None = None
    resolved_after: float | None = None
    notes: list[str] = field(default_factory=list)


def matching(alert: dict[str, Any], fault: Fault) -> bool:
    labels = alert.get("labels", {})
    return labels.get("alertname") == fault.alertname and all(labels.get(k) == v for k, v in fault.labels.items())


def first_notification(notifications: list[dict[str, Any]], fault: Fault, status: str, since: float) -> float | None:
    for note in notifications:
        if note["received_at"] < since:
            continue
        for alert in note["payload"].get("alerts", []):
            if alert.get("status") == status and matching(alert, fault):
                return float(note["received_at"])
    return None


def wait_for(
    sandbox: Sandbox,
    faults: list[Fault],
    status: str,
    since: float,
    timeout: float,
    record: Callable[[Fault, float], None],
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(faults)
    while pending and time.monotonic() < deadline:
        notifications = sandbox.webhook_alerts()
        for fault in list(pending):
            received = first_notification(notifications, fault, status, since)
            if received is not None:
                record(fault, received - since)
                pending.remove(fault)
        time.sleep(POLL_S)
    if pending:
        firing = sandbox.query('ALERTS{alertstate="firing"}')
        names = sorted({f"{r['metric']['alertname']}{{{r['metric'].get('instance', '')}}}" for r in firing})
        missing = ", ".join(f"{f.alertname} ({f.what})" for f in pending)
        pytest.fail(f"no {status} notification within {timeout:.0f}s for: {missing}; Prometheus has firing: {names}")


def fill_filesystem(sandbox: Sandbox, guest_index: int) -> None:
    """Fill the guest's small scratch filesystem to above 97%."""
    script = (
        f"avail=$(df --output=avail -B1 {SCRATCH_MOUNT} | tail -1); "
        f"fallocate -l $((avail - 1048576)) {SCRATCH_MOUNT}/ballast"
    )
    sandbox.exec(sandbox.gpu(guest_index), ["sh", "-c", script])


def write_report(faults: list[Fault]) -> str:
    rows = [
        "| fault | alert | injection → firing at webhook (s) | removal → resolved at webhook (s) |",
        "|---|---|---|---|",
    ]
    for fault in faults:
        fired = f"{fault.fired_after:.1f}" if fault.fired_after is not None else "—"
        resolved = f"{fault.resolved_after:.1f}" if fault.resolved_after is not None else "—"
        rows.append(f"| {fault.what} | {fault.alertname} | {fired} | {resolved} |")
    table = "\n".join(rows) + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        "# Fault-to-alert latency in the e2e sandbox\n\n"
        "scrape_interval 5s, evaluation_interval 5s, for: 10s (GpuXidFatalError 0s), resend-delay 5s, "
        "Alertmanager group_wait 1s, group_interval 5s; collectors every 5s.\n\n" + table
    )
    return table


def test_injected_faults_reach_the_webhook_and_resolve(sandbox: Sandbox) -> None:
    gpu1, gpu2 = sandbox.gpu(0), sandbox.gpu(1)
    stray_pid = str(sandbox.main_pid(gpu1, "pai-sandbox-stray.service"))
    faults = [
        Fault("JobExporterNotUp", "job-exporter stopped", {"instance": f"{gpu2.name}:9102"}),
        Fault(
            "NvidiaSmiDoubleEccError",
            "double-bit ECC error, GPU 1",
            {"instance": f"{gpu1.name}:9102", "minor_number": "1"},
        ),
        Fault("GpuXidFatalError", "Xid 79, GPU 2", {"instance": f"{gpu1.name}:9102", "xid": "79"}),
        Fault(
            "GpuUsedByExternalProcess",
            "process outside any job on GPU 3",
            {"instance": f"{gpu1.name}:9102", "pid": stray_pid},
        ),
        Fault("NodeNotReady", "node NotReady (watchdog)", {"node_name": gpu1.name}),
        Fault(
            "NodeFilesystemAlmostOutOfSpace",
            "filesystem nearly full",
            {"instance": f"{gpu1.name}:9100", "mountpoint": SCRATCH_MOUNT},
        ),
    ]
    assert_quiet(sandbox, "before the first fault")

    injected = time.time()
    sandbox.exec(gpu2, ["systemctl", "stop", "pai-job-exporter.service"])
    sandbox.write_gpu_scenario(gpu1, ecc_double={1: 2}, xids=[(2, 79)], external_gpu=3)
    sandbox.send_json("kube_control", f"/nodes/{gpu1.name}", "PATCH", {"ready": False})
    fill_filesystem(sandbox, 0)

    def fired(fault: Fault, seconds: float) -> None:
        fault.fired_after = seconds

    def resolved(fault: Fault, seconds: float) -> None:
        fault.resolved_after = seconds

    try:
        wait_for(sandbox, faults, "firing", injected, FIRE_TIMEOUT_S, fired)
    finally:
        removed = time.time()
        sandbox.exec(gpu2, ["systemctl", "start", "pai-job-exporter.service"])
        # A reset GPU: volatile ECC counters back to 0, the Xid stays in history (it ages out of the rule's window).
        sandbox.write_gpu_scenario(gpu1, xids=[(2, 79)])
        sandbox.send_json("kube_control", f"/nodes/{gpu1.name}", "PATCH", {"ready": True})
        sandbox.exec(gpu1, ["rm", "-f", f"{SCRATCH_MOUNT}/ballast"])
    try:
        wait_for(sandbox, faults, "resolved", removed, RESOLVE_TIMEOUT_S, resolved)
    finally:
        table = write_report(faults)
        print("\n" + table)
    assert_quiet(sandbox, "after every fault resolved")


def test_every_external_metric_the_rules_use_exists_on_the_sandbox(sandbox: Sandbox) -> None:
    """rules/external-metrics.yml on real systemd hosts (the systemd collector needs systemd as PID 1).

    Textfile metrics are left out: the sandbox writes no textfile (tests/integration/test_external_metrics.py checks
    them with one). Alertmanager's cluster metrics are there: the e2e sandbox has two monitoring hosts, whose
    Alertmanagers gossip. Looked up over the last hour: ALERTS exists only while an alert is active, as during the
    test above."""
    listed = yaml.safe_load((REPO / "rules" / "external-metrics.yml").read_text(encoding="utf-8"))
    left_out = {"node_exporter_textfile"}
    names = [name for program, names in listed.items() if program not in left_out for name in names]
    assert [name for name in names if not sandbox.query(f'count(last_over_time({{__name__="{name}"}}[1h]))')] == []
