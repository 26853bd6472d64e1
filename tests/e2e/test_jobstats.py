"""``pai-jobstats``, run as a user runs it against the sandbox's real Prometheus, for a busy job and for an idle one;
and the idle job's alert all the way to Alertmanager's webhook receiver.

The idle job is a fault this module injects (``Sandbox.start_idle_job``; a healthy sandbox has none, so it stays
quiet): ``erin~notebook`` shares GPU 2 of the first GPU node with bob's job and runs kernels there, and holds GPU 3
without ever running one. PaiJobGpuIdle (10 s instead of 2 h in the sandbox, ``alert_overrides()``) must page for
GPU 3 and for no other GPU, with the node, the GPU's index and UUID and the job in its labels, and resolve once the
job has ended. ``pai-jobstats`` then says that 1 of the job's 2 GPUs was idle, and that alice's busy job used both
its GPUs; ``--json`` gives the same numbers as the text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.sandbox import IDLE_JOB, IDLE_JOB_UNUSED_GPUS, JOBS, Sandbox
from tests.e2e.test_alerts import FIRE_TIMEOUT_S, POLL_S, RESOLVE_TIMEOUT_S, Fault, active_alerts, matching, wait_for

pytestmark = pytest.mark.e2e

JOBSTATS = Path(sys.executable).with_name("pai-jobstats")
JOBSTATS_TIMEOUT_S = 60.0
BUSY_JOB = JOBS[0][0][1]  # alice~resnet50: GPUs 0 and 1 of the first GPU node, both busy
IDLE_JOB_NAME = IDLE_JOB[1]
IDLE_GPU = str(min(IDLE_JOB_UNUSED_GPUS))
DEFAULT_STEP_S = 60.0  # pai-jobstats --step by default
IDLE_JOB_SECONDS = 30.0
IDLE_STEP = "5s"
"""The idle job runs for well under a minute: its report asks at the sandbox's scrape interval instead of every
minute (pai-jobstats's default), as a user would for so short a job."""


@dataclass
class IdleJobRun:
    fault: Fault
    firing: dict[str, Any]
    """The firing alert as Alertmanager sent it to the webhook (labels, annotations)."""
    idle_alerts: list[dict[str, str]]
    """Every PaiJobGpuIdle series (pending or firing) Prometheus had when the alert fired."""
    quiet_after: list[str]
    """Every alert pending or firing once the idle alert had resolved."""


def pai_jobstats(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(JOBSTATS), "--prometheus", sandbox.url("prometheus"), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=JOBSTATS_TIMEOUT_S, check=False)


def report(sandbox: Sandbox, job: str, *options: str) -> tuple[str, dict[str, Any]]:
    """The text report and the JSON one of a job; both must succeed."""
    text = pai_jobstats(sandbox, job, *options)
    assert text.returncode == 0, text.stderr
    as_json = pai_jobstats(sandbox, job, "--json", *options)
    assert as_json.returncode == 0, as_json.stderr
    return text.stdout, json.loads(as_json.stdout)


def gpu_uuid(sandbox: Sandbox, instance: str, index: str) -> str:
    found = sandbox.query(f'pai_gpu_info{{instance="{instance}", index="{index}"}}')
    assert len(found) == 1, found
    return str(found[0]["metric"]["uuid"])


def firing_alert(sandbox: Sandbox, fault: Fault, since: float) -> dict[str, Any]:
    for note in sandbox.webhook_alerts():
        if note["received_at"] < since:
            continue
        for alert in note["payload"].get("alerts", []):
            if alert.get("status") == "firing" and matching(alert, fault):
                return dict(alert)
    pytest.fail(f"no firing {fault.alertname} at the webhook")


def wait_seen_for(sandbox: Sandbox, job: str, seconds: float) -> None:
    """Wait until Prometheus has seen the job for longer than ``seconds`` (at least one step of a report)."""
    expr = f'time() - min_over_time(timestamp(task_info{{job_name="{job}"}})[1h:5s]) > {seconds:g}'
    deadline = time.monotonic() + FIRE_TIMEOUT_S
    while not sandbox.query(expr):
        assert time.monotonic() < deadline, f"Prometheus has not seen {job} for {seconds:g}s"
        time.sleep(POLL_S)


@pytest.fixture(scope="module")
def idle_job(sandbox: Sandbox) -> IdleJobRun:
    """Start the idle job, wait for its alert to reach the webhook, end the job, wait for the alert to resolve."""
    node = sandbox.gpu(0)
    instance = f"{node.name}:9102"
    fault = Fault(
        "PaiJobGpuIdle",
        f"job holding GPU {IDLE_GPU} idle",
        {
            "instance": instance,
            "node_name": node.name,
            "index": IDLE_GPU,
            "uuid": gpu_uuid(sandbox, instance, IDLE_GPU),
            "job_name": IDLE_JOB_NAME,
            "username": IDLE_JOB[2],
        },
    )

    def fired(fault: Fault, seconds: float) -> None:
        fault.fired_after = seconds

    def resolved(fault: Fault, seconds: float) -> None:
        fault.resolved_after = seconds

    injected = time.time()
    sandbox.start_idle_job()
    try:
        wait_for(sandbox, [fault], "firing", injected, FIRE_TIMEOUT_S, fired)
        idle_alerts = [r["metric"] for r in sandbox.query('ALERTS{alertname="PaiJobGpuIdle"}')]
        firing = firing_alert(sandbox, fault, injected)
        # Long enough that its first samples, taken before the GPU collector's next cycle saw its processes (0 % on
        # every GPU, as a real job's start is), are a small part of its life.
        wait_seen_for(sandbox, IDLE_JOB_NAME, IDLE_JOB_SECONDS)
    finally:
        removed = time.time()
        sandbox.stop_idle_job()
    wait_for(sandbox, [fault], "resolved", removed, RESOLVE_TIMEOUT_S, resolved)
    print(
        f"\nPaiJobGpuIdle: injection → firing at the webhook {fault.fired_after:.1f}s, "
        f"removal → resolved {fault.resolved_after:.1f}s"
    )
    return IdleJobRun(fault, firing, idle_alerts, active_alerts(sandbox))


def test_an_idle_job_pages_for_the_gpu_it_leaves_idle_and_resolves(idle_job: IdleJobRun) -> None:
    labels = idle_job.fault.labels
    assert [(a["index"], a["job_name"]) for a in idle_job.idle_alerts] == [(IDLE_GPU, IDLE_JOB_NAME)], (
        "PaiJobGpuIdle is for the GPU the job leaves idle only, not for the one it uses"
    )
    description = idle_job.firing["annotations"]["description"]
    assert labels["uuid"] in description
    assert f"pai-jobstats {IDLE_JOB_NAME}" in description
    assert idle_job.fault.resolved_after is not None
    assert idle_job.quiet_after == [], "the sandbox is not quiet once the idle job has ended"


def table_rows(text: str) -> dict[str, list[str]]:
    """The GPU table of a text report: each GPU's cells by its index."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("GPU  "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  ") or line.strip().startswith("("):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{round(ratio * 100)} %"


def assert_same_numbers(text: str, data: dict[str, Any]) -> None:
    """The text report and the JSON one give the same GPUs, counts, figures and hints."""
    held, used = data["gpus"]["held"], data["gpus"]["used"]
    assert f"GPUs: {held} held, {used} used" in text
    rows = table_rows(text)
    assert sorted(rows) == sorted(device["index"] for device in data["gpus"]["devices"])
    for device in data["gpus"]["devices"]:
        _, node, uuid, utilisation, own, idle, sm_active, tensor, *_ = rows[device["index"]]
        assert (node, uuid) == (device["node_name"], device["uuid"])
        assert utilisation == percent(device["utilization_ratio"])
        assert (own, idle) == (percent(device["own_use_ratio"]), percent(device["idle_ratio"]))
        assert (sm_active, tensor) == (percent(device["sm_active_ratio"]), percent(device["tensor_active_ratio"]))
    assert [line[2:] for line in text.splitlines() if line.startswith("- ")] == data["hints"]


def devices_by_index(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {device["index"]: device for device in data["gpus"]["devices"]}


def idle_hints(hints: Sequence[str]) -> list[str]:
    return [hint for hint in hints if " idle for " in hint]


def test_jobstats_reports_the_idle_gpu_of_the_idle_job(sandbox: Sandbox, idle_job: IdleJobRun) -> None:
    text, data = report(sandbox, IDLE_JOB_NAME, "--step", IDLE_STEP)
    assert_same_numbers(text, data)
    assert data["job"]["nodes"] == [idle_job.fault.labels["instance"]]
    assert (data["gpus"]["held"], data["gpus"]["used"]) == (2, 1)
    devices = devices_by_index(data)
    assert devices[IDLE_GPU]["uuid"] == idle_job.fault.labels["uuid"]
    assert devices[IDLE_GPU]["idle_ratio"] >= 0.5
    assert devices[IDLE_GPU]["own_use_ratio"] == 0
    used = next(device for index, device in devices.items() if index != IDLE_GPU)
    assert used["idle_ratio"] < 0.5
    assert used["own_use_ratio"] > 0
    assert used["sm_active_ratio"] > 0
    hints = idle_hints(data["hints"])
    assert len(hints) == 1
    assert hints[0].startswith("1 of 2 GPUs was idle for ")


def test_jobstats_reports_the_busy_job_using_its_gpus(sandbox: Sandbox, idle_job: IdleJobRun) -> None:
    """The busy job with pai-jobstats's defaults (it has run for more than their one-minute step). The idle job's
    run comes first so that a module run alone also waits for that."""
    assert idle_job.fault.fired_after is not None
    wait_seen_for(sandbox, BUSY_JOB, 2 * DEFAULT_STEP_S)
    text, data = report(sandbox, BUSY_JOB)
    assert_same_numbers(text, data)
    assert (data["gpus"]["held"], data["gpus"]["used"]) == (2, 2)
    for device in data["gpus"]["devices"]:
        assert device["idle_ratio"] < 0.5
        assert device["own_use_ratio"] > 0
        assert device["utilization_ratio"] > 0
        assert device["sm_active_ratio"] > 0
        assert device["tensor_active_ratio"] > 0
    assert idle_hints(data["hints"]) == []
    assert "idle for" not in text


def test_jobstats_on_an_unknown_job_says_so_and_fails(sandbox: Sandbox) -> None:
    result = pai_jobstats(sandbox, "nobody~no-such-job")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no job, pod or Slurm job 'nobody~no-such-job'" in result.stderr
