"""The site playbook converges: a second run changes nothing, and a node added to the inventory is scraped
without Prometheus being restarted. Runs last (it grows the sandbox by one GPU node)."""

from __future__ import annotations

import re
import time

import pytest

from sandbox.sandbox import REPO, Sandbox

pytestmark = pytest.mark.e2e

SCRAPE_TIMEOUT_S = 120.0


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per host, the counters of the PLAY RECAP."""
    hosts: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s*:\s*(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def changed_tasks(output: str) -> list[str]:
    """``TASK [...] -> changed: [host]`` for every change a playbook run reports."""
    found: list[str] = []
    task = ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip("* ")
        elif line.startswith("changed: ["):
            found.append(f"{task} -> {line.split(' => ')[0]}")
    return found


def prometheus_start_time(sandbox: Sandbox) -> str:
    """When the Prometheus process started, from its own status API (a reload keeps it, a restart changes it)."""
    data = sandbox.get_json("prometheus", "/api/v1/status/runtimeinfo")
    assert data["status"] == "success", data
    return str(data["data"]["startTime"])


def test_second_site_run_changes_nothing(sandbox: Sandbox) -> None:
    output = sandbox.playbook(REPO / "playbooks" / "site.yml", capture=True)
    counters = recap(output)
    assert set(counters) == {g.name for g in sandbox.guests}
    changed = {host: c["changed"] for host, c in counters.items() if c.get("changed")}
    tasks = changed_tasks(output)
    assert not changed, f"the second run changed something: {changed}\n" + "\n".join(tasks)


def test_added_node_is_scraped_without_restarting_prometheus(sandbox: Sandbox) -> None:
    started = prometheus_start_time(sandbox)
    sandbox.add_gpu_node()
    new = sandbox.gpu(sandbox.gpu_nodes - 1)
    expected = {f"{new.name}:9100", f"{new.name}:9102"}
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    up: set[str] = set()
    while time.monotonic() < deadline:
        up = {t["labels"]["instance"] for t in sandbox.targets() if t["health"] == "up"}
        if expected <= up:
            break
        time.sleep(2)
    assert expected <= up, f"{new.name} is not scraped: up targets {sorted(up)}"
    assert sandbox.query(f'nvidiasmi_utilization_gpu{{instance="{new.name}:9102"}}'), "no GPU metrics from the new node"
    assert prometheus_start_time(sandbox) == started, "Prometheus was restarted to pick up the new node"
