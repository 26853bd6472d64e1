"""Prometheus ships every sample to a scale-out store (VictoriaMetrics in the control guest) through remote_write."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

ARRIVAL_TIMEOUT_S = 60.0


def vm_query(sandbox: Sandbox, expr: str) -> list[dict[str, Any]]:
    data = sandbox.get_json("victoria_metrics", "/api/v1/query", {"query": expr})
    assert data["status"] == "success", data
    return list(data["data"]["result"])


@pytest.mark.parametrize("expr", ["up", "nvidiasmi_utilization_gpu", "task_gpu_percent", "pai_node_count"])
def test_series_arrive_in_victoria_metrics(sandbox: Sandbox, expr: str) -> None:
    # Only the suite's targets: right after the first deployment Prometheus may still hold series of the Debian
    # package's own configuration (localhost:9090), scraped before the role replaced it and before remote_write.
    suite = {t["labels"]["instance"] for t in sandbox.targets()}
    expected = {str(r["metric"].get("instance")) for r in sandbox.query(expr)} & suite
    assert expected, f"Prometheus itself has no {expr}"
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    arrived: set[str] = set()
    while time.monotonic() < deadline:
        arrived = {str(r["metric"].get("instance")) for r in vm_query(sandbox, f'{expr}{{sandbox="{sandbox.name}"}}')}
        if arrived >= expected:
            return
        time.sleep(2)
    pytest.fail(f"{expr}: VictoriaMetrics has {sorted(arrived)}, Prometheus has {sorted(expected)}")
