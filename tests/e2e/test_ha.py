"""Highly available monitoring on the sandbox's two monitoring guests (``<name>-ctl`` and ``<name>-mon2``).

Each guest runs Prometheus (replica label: its name) and Alertmanager; the Alertmanagers gossip as one cluster and
each Prometheus sends to both. The test takes away the Alertmanager that notified, with its Prometheus, while alerts
fire, and counts what the webhook receiver (on the control guest) got per alert group:

1. fault A (the job-exporter of the second GPU node stopped, ``JobExporterNotUp``) fires; the notification names
   the Alertmanager that sent it (``externalURL``): the member first in the cluster's order, either guest;
2. that host's ``prometheus`` and ``prometheus-alertmanager`` units stop (``systemctl stop``: the sender may be the
   control guest, which also holds the sandbox's webhook receiver, VictoriaMetrics and the Kubernetes stand-in, so
   the guest itself stays up; its node_exporter too, so the outage is the monitoring tier's alone);
3. A is removed and fault B (the first GPU node NotReady, ``NodeNotReady``) injected: the surviving Alertmanager
   sends A's resolution and B's firing, each once;
4. the units start again while B fires: the Alertmanager rejoins the cluster, receives B from both Prometheus and
   runs its notification pipeline over every group twice, and sends nothing (it learnt the notification log from
   its peer);
5. B is removed: one resolution (both replicas resolve it, seconds apart: the sandbox's group interval is longer
   than that, ``Sandbox.group_interval``); then neither Prometheus holds any alert but the tier's own, pending ones
   about the lost host.

In the end each of the two groups got exactly one firing and one resolved notification, and nothing else was sent.
The outage lasts as long as B takes to notify (about half a minute here), well within the ``for:`` of the tier's
own alerts (``PrometheusReplicaDown``, ``AlertmanagerNotUp``: 5 minutes; ``PrometheusNotificationsFailing``: 15),
which are pending meanwhile, and the last one for the 5 minutes its rate looks back, but never fire. The quiet check
reads both Prometheus's rule state (/api/v1/alerts), not the ALERTS series (see ``rule_alerts``). The timings go
to .cache/e2e-ha.md.

A second test checks that VictoriaMetrics, which both replicas ``remote_write`` to, holds one series per target
with the samples of one scraper (``-dedup.minScrapeInterval`` equal to the scrape interval, sandbox/prepare.yml).
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from sandbox.sandbox import REPO, Guest, Sandbox
from tests.e2e.test_alerts import QUIET_WINDOW_S
from tests.e2e.test_remote_write import vm_query

pytestmark = pytest.mark.e2e

TIMEOUT_S = 180.0
POLL_S = 1.0
REPORT = REPO / ".cache" / "e2e-ha.md"
MONITORING_UNITS = ("prometheus.service", "prometheus-alertmanager.service")
FAULT_A = "JobExporterNotUp"
FAULT_B = "NodeNotReady"
SCRAPE_INTERVAL_S = 5  # prometheus_scrape_interval of the sandbox inventory
SAMPLE_WINDOW_S = 60


def sender(note: dict[str, Any]) -> str:
    """The host of the Alertmanager that sent a notification (its external URL defaults to http://<host>:9093/)."""
    return urllib.parse.urlsplit(str(note["payload"].get("externalURL", ""))).hostname or "?"


def notifications_since(sandbox: Sandbox, since: float) -> list[dict[str, Any]]:
    return [n for n in sandbox.webhook_alerts() if n["received_at"] >= since]


def group_of(note: dict[str, Any]) -> str:
    return str(note["payload"].get("groupLabels", {}).get("alertname", "?"))


def shown(notes: list[dict[str, Any]]) -> list[str]:
    return [f"{group_of(n)} {n['payload'].get('status')} from {sender(n)}" for n in notes]


def wait_until(what: str, condition: Callable[[], bool], diagnose: Callable[[], object] = lambda: "") -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {TIMEOUT_S:.0f}s: {what}; {diagnose()}")
        time.sleep(POLL_S)


def wait_notification(sandbox: Sandbox, since: float, alertname: str, status: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        notes = notifications_since(sandbox, since)
        found[:] = [n for n in notes if group_of(n) == alertname and n["payload"].get("status") == status]
        return bool(found)

    wait_until(
        f"a {status} notification of {alertname}",
        arrived,
        lambda: f"received since: {shown(notifications_since(sandbox, since))}",
    )
    return found[0]


def values(sandbox: Sandbox, expr: str, guest: Guest) -> dict[str, float]:
    """instance -> value of a query, asked of one guest's Prometheus (None when it does not answer)."""
    try:
        result = sandbox.query(expr, guest)
    except OSError:
        return {}
    return {str(r["metric"].get("instance")): float(r["value"][1]) for r in result}


def alertmanager_metric(sandbox: Sandbox, guest: Guest, name: str) -> float:
    """A counter or gauge of one guest's Alertmanager, read from its /metrics (0 when absent)."""
    url = f"{sandbox.url('alertmanager', guest)}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def rule_alerts(sandbox: Sandbox, guest: Guest) -> list[dict[str, Any]]:
    """What one Prometheus's rule engine holds pending or firing (/api/v1/alerts): what it sends to Alertmanager.
    The ALERTS series is no guide after a restart: Prometheus writes no staleness marker for the alerts active when
    it stopped, so for the lookback (5 minutes) a query still finds them as they were."""
    return list(sandbox.get_json("prometheus", "/api/v1/alerts", guest=guest)["data"]["alerts"])


def outside_the_outage(sandbox: Sandbox, lost: Guest, pending: set[str]) -> list[str]:
    """Alerts pending or firing on either Prometheus, except the monitoring tier's own alerts about the lost host
    while they are pending (those are added to ``pending``): a rate over 5 minutes still holds the outage."""
    unexplained = []
    for guest in sandbox.monitoring_guests:
        for alert in rule_alerts(sandbox, guest):
            labels = alert["labels"]
            shown = (
                f"{labels['alertname']}[{alert['state']}]{{{', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}}}"
            )
            about_lost = labels.get("component") == "monitoring" and any(lost.name in v for v in labels.values())
            if alert["state"] == "pending" and about_lost:
                pending.add(labels["alertname"])
            else:
                unexplained.append(f"{guest.name}: {shown}")
    return unexplained


def assert_quiet_but_for_the_outage(sandbox: Sandbox, lost: Guest) -> set[str]:
    """Nothing pending or firing on either Prometheus for QUIET_WINDOW_S but the tier's pending alerts about the
    lost host; returns their names."""
    pending: set[str] = set()
    wait_until("both Prometheus quiet", lambda: not outside_the_outage(sandbox, lost, pending))

    def now() -> float:
        return float(sandbox.query("vector(time())")[0]["value"][1])

    start = now()
    while now() - start < QUIET_WINDOW_S:
        assert outside_the_outage(sandbox, lost, pending) == [], "the sandbox is not quiet after the outage"
        time.sleep(POLL_S)
    return pending


def cluster_formed(sandbox: Sandbox, observer: Guest) -> bool:
    """Every Alertmanager scraped up and gossiping with all of them, as one Prometheus sees it."""
    members = values(sandbox, "alertmanager_cluster_members", observer)
    up = values(sandbox, 'up{pai_service_name=~"alertmanager|prometheus"}', observer)
    want = sandbox.monitoring_hosts
    return len(members) == want and set(members.values()) == {want} and len(up) == 2 * want and min(up.values()) == 1


def test_losing_the_notifying_monitoring_host_neither_duplicates_nor_loses_notifications(sandbox: Sandbox) -> None:
    assert sandbox.monitoring_hosts == 2, "the e2e sandbox has two monitoring guests (tests/e2e/conftest.py)"
    ctl, gpu1, gpu2 = sandbox.ctl, sandbox.gpu(0), sandbox.gpu(1)
    wait_until(
        "both Alertmanagers in one cluster, every Prometheus and Alertmanager up", lambda: cluster_formed(sandbox, ctl)
    )
    since = time.time()
    times: dict[str, float] = {}

    sandbox.exec(gpu2, ["systemctl", "stop", "pai-job-exporter.service"])
    first = wait_notification(sandbox, since, FAULT_A, "firing")
    times["A firing"] = first["received_at"] - since
    lost = sandbox.guest(sender(first))
    survivor = next(g for g in sandbox.monitoring_guests if g != lost)

    stopped = time.time()
    sandbox.exec(lost, ["systemctl", "stop", *MONITORING_UNITS])
    try:
        sandbox.exec(gpu2, ["systemctl", "start", "pai-job-exporter.service"])
        sandbox.send_json("kube_control", f"/nodes/{gpu1.name}", "PATCH", {"ready": False})
        changed = time.time()
        resolved_a = wait_notification(sandbox, since, FAULT_A, "resolved")
        firing_b = wait_notification(sandbox, since, FAULT_B, "firing")
        times["A resolved (removed during the outage)"] = resolved_a["received_at"] - changed
        times["B firing (injected during the outage)"] = firing_b["received_at"] - changed
        assert (sender(resolved_a), sender(firing_b)) == (survivor.name, survivor.name)
    finally:
        sandbox.exec(lost, ["systemctl", "start", *MONITORING_UNITS])
        restarted = time.time()
    times["outage (units stopped)"] = restarted - stopped

    # The rejoined Alertmanager holds B, from both Prometheus, and has been through its pipeline for every group
    # twice (each pass asks the notification log once per group): a duplicate would have been sent by now.
    wait_until("the restarted Alertmanager back in the cluster", lambda: cluster_formed(sandbox, survivor))
    wait_until(
        f"the restarted Prometheus firing {FAULT_B}",
        lambda: bool(values(sandbox, f'ALERTS{{alertname="{FAULT_B}", alertstate="firing"}}', lost)),
    )

    def flushed_twice() -> bool:
        groups = alertmanager_metric(sandbox, lost, "alertmanager_dispatcher_aggregation_groups")
        queries = alertmanager_metric(sandbox, lost, "alertmanager_nflog_queries_total")
        return groups >= 1 and queries >= 2 * groups

    wait_until(f"the restarted Alertmanager {lost.name} through its notification pipeline twice", flushed_twice)
    times["rejoin (units started -> pipeline run twice)"] = time.time() - restarted
    after_rejoin = notifications_since(sandbox, restarted)
    assert after_rejoin == [], f"the rejoined Alertmanager or its peer sent again: {shown(after_rejoin)}"

    sandbox.send_json("kube_control", f"/nodes/{gpu1.name}", "PATCH", {"ready": True})
    removed = time.time()
    resolved_b = wait_notification(sandbox, since, FAULT_B, "resolved")
    times["B resolved (after the rejoin)"] = resolved_b["received_at"] - removed
    tier_pending = assert_quiet_but_for_the_outage(sandbox, lost)

    notes = notifications_since(sandbox, since)
    by_group = {
        name: [(n["payload"]["status"], sender(n)) for n in notes if group_of(n) == name] for name in (FAULT_A, FAULT_B)
    }
    write_report(lost, survivor, by_group, times, tier_pending)
    assert by_group == {
        FAULT_A: [("firing", lost.name), ("resolved", survivor.name)],
        FAULT_B: [("firing", survivor.name), ("resolved", by_group[FAULT_B][-1][1])],
    }, shown(notes)
    assert len(notes) == 4, f"notifications besides the two groups': {shown(notes)}"


def write_report(
    lost: Guest,
    survivor: Guest,
    by_group: dict[str, list[tuple[str, str]]],
    times: dict[str, float],
    tier_pending: set[str],
) -> None:
    rows = ["| step | seconds |", "|---|---|", *(f"| {step} | {seconds:.1f} |" for step, seconds in times.items())]
    counts = [
        f"- {name}: " + ", ".join(f"{status} from {host}" for status, host in notes) for name, notes in by_group.items()
    ]
    text = (
        f"# HA monitoring in the e2e sandbox\n\nStopped: prometheus and prometheus-alertmanager on {lost.name} "
        f"(the notifying member); survivor {survivor.name}.\n\n"
        + "\n".join(rows)
        + "\n\nNotifications per group:\n"
        + "\n".join(counts)
        + "\n\nThe tier's own alerts pending after the outage (never firing): "
        + (", ".join(sorted(tier_pending)) or "none")
        + "\n"
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    print("\n" + text)


def test_victoria_metrics_holds_one_series_per_target_with_one_replicas_samples(sandbox: Sandbox) -> None:
    """Both replicas write every series (without the replica label) and VictoriaMetrics keeps one sample per
    scrape interval: as many samples per minute as one Prometheus scrapes, not two."""
    assert sandbox.monitoring_hosts == 2, "the e2e sandbox has two monitoring guests (tests/e2e/conftest.py)"
    writers = values(sandbox, "rate(prometheus_remote_storage_samples_total[1m]) > 0", sandbox.ctl)
    replicas = {f"{g.name}:9090" for g in sandbox.monitoring_guests}
    assert set(writers) == replicas, f"not every replica writes to VictoriaMetrics: {writers}"

    targets = {t["labels"]["instance"] for t in sandbox.targets()}
    selector = f'up{{sandbox="{sandbox.name}"}}'
    series = vm_query(sandbox, selector)
    per_instance = {str(r["metric"].get("instance")): 0 for r in series}
    for r in series:
        per_instance[str(r["metric"].get("instance"))] += 1
    assert {i: n for i, n in per_instance.items() if i in targets} == dict.fromkeys(targets, 1)
    assert [r["metric"] for r in series if "replica" in r["metric"]] == []

    # Raw samples of the last minute per target: one scraper at 5 s has 12 (13 at the edges), two without
    # deduplication about 24.
    counts = vm_query(sandbox, f"count_over_time({selector}[{SAMPLE_WINDOW_S}s])")
    most = SAMPLE_WINDOW_S // SCRAPE_INTERVAL_S + 1
    doubled = {str(r["metric"].get("instance")): float(r["value"][1]) for r in counts if float(r["value"][1]) > most}
    assert doubled == {}, f"more than {most} samples a minute: both replicas' samples kept"
