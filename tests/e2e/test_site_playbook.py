"""The site playbook converges: with a GPU node added to the inventory, ONE run of it deploys the new node, which is
then scraped without Prometheus being restarted, and changes nothing on the hosts that were already there (but the
target files that list the new node). Runs after the other modules but before ``test_lifecycle.py``."""

from __future__ import annotations

import re
import time

import pytest

from sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

SCRAPE_TIMEOUT_S = 120.0
POLL_S = 2.0
# The one task that may change on an existing host when a node joins: the monitoring hosts' file_sd target files.
TARGETS_TASK = "prometheus : Write the scrape targets of each job"


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per host, the counters of the PLAY RECAP."""
    hosts: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s*:\s*(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def changed_tasks(output: str) -> list[tuple[str, str]]:
    """``(task, host)`` for every change a playbook run reports (tasks and handlers)."""
    found: list[tuple[str, str]] = []
    task = ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif match := re.match(r"^changed: \[([^\]]+)\]", line):
            found.append((task, match.group(1)))
    return found


def prometheus_start_time(sandbox: Sandbox) -> str:
    """When the Prometheus process started, from its own status API (a reload keeps it, a restart changes it)."""
    data = sandbox.get_json("prometheus", "/api/v1/status/runtimeinfo")
    assert data["status"] == "success", data
    return str(data["data"]["startTime"])


def test_added_node_is_deployed_by_one_site_run_that_changes_nothing_else(sandbox: Sandbox) -> None:
    started = prometheus_start_time(sandbox)
    existing = {g.name for g in sandbox.guests}
    monitoring = {g.name for g in sandbox.monitoring_guests}
    new, output = sandbox.add_gpu_node()

    counters = recap(output)
    assert set(counters) == existing | {new.name}
    assert counters[new.name].get("changed", 0) > 0, "the site playbook deployed nothing on the new node"
    unexpected = [
        f"{task} -> {host}"
        for task, host in changed_tasks(output)
        # the collection's roles report as pai.monitoring.ROLE
        if host in existing
        and not (host in monitoring and task.removeprefix("pai.monitoring.").startswith(TARGETS_TASK))
    ]
    assert not unexpected, "the site run changed the existing hosts:\n" + "\n".join(unexpected)

    expected = {f"{new.name}:9100", f"{new.name}:9102"}
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    up: set[str] = set()
    while time.monotonic() < deadline:
        up = {t["labels"]["instance"] for t in sandbox.targets() if t["health"] == "up"}
        if expected <= up:
            break
        time.sleep(POLL_S)
    assert expected <= up, f"{new.name} is not scraped: up targets {sorted(up)}"
    assert sandbox.query(f'nvidiasmi_utilization_gpu{{instance="{new.name}:9102"}}'), "no GPU metrics from the new node"
    assert prometheus_start_time(sandbox) == started, "Prometheus was restarted to pick up the new node"
