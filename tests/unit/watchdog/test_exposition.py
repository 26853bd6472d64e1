"""The watchdog's exposition for a fixed cluster, compared with a golden file.

Regenerate it with ``PAI_UPDATE_GOLDEN=1 pytest tests/unit/watchdog/test_exposition.py`` (or ``--update-golden``)
and review the diff. Latency histograms are left out (their values are timings) and the stand-in's random URL is
replaced by a fixed one; so is the time of the last list (a timestamp).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from kube_apiserver import ClusterState, KubeApiStandIn
from pai_monitoring.watchdog.metrics import OBJECTS_TIMESTAMP
from tests.unit.watchdog.conftest import TOKEN, MakeCollector

GOLDEN = Path(__file__).parent / "golden" / "cluster.prom"
URL = "https://kube-apiserver.test:6443"
SCENARIO = {
    "token": TOKEN,
    "nodes": [
        {"name": "gpu-node-1", "ip": "10.0.0.1", "gpus": 8},
        {"name": "gpu-node-2", "ip": "10.0.0.2", "gpus": 8, "unschedulable": True},
        {"name": "gpu-node-3", "ip": "10.0.0.3", "gpus": 4, "ready": False, "conditions": {"DiskPressure": True}},
        {"name": "cpu-node-1", "ip": "10.0.1.1"},
    ],
    "pods": [
        {"name": "prometheus-0", "namespace": "pai", "labels": {"app": "prometheus"}, "node": "cpu-node-1",
         "containers": [{"name": "prometheus"}, {"name": "config-reloader"}]},
        {"name": "rest-server-5c9f", "namespace": "pai", "labels": {"app": "rest-server"}, "node": "gpu-node-3",
         "ready": False, "containers": [{"name": "rest-server", "state": "waiting", "reason": "CrashLoopBackOff"}]},
        {"name": "alice-train-worker-0", "labels": {"jobName": "alice~train"}, "node": "gpu-node-1",
         "containers": [{"name": "worker", "gpus": 4}, {"name": "logger", "gpus": 1}]},
        {"name": "alice-train-worker-1", "labels": {"jobName": "alice~train"}, "node": "gpu-node-2",
         "containers": [{"name": "worker", "gpus": 2}]},
        {"name": "bob-eval-0", "labels": {"jobName": "bob~eval"}, "phase": "Pending"},
        {"name": "bob-old-0", "labels": {"jobName": "bob~old"}, "node": "gpu-node-1", "phase": "Succeeded",
         "containers": [{"name": "worker", "gpus": 8, "state": "terminated"}]},
        {"name": "carol-llm-worker-0", "labels": {"jobName": "carol~llm", "userName": "carol"}, "node": "gpu-node-1",
         "containers": [{"name": "worker", "gpus": 2, "restarts": 3, "last_reason": "OOMKilled", "last_exit_code": 137},
                        {"name": "sidecar", "state": "terminated", "reason": "Error", "exit_code": 2}]},
        {"name": "dave-eval-0", "labels": {"jobName": "dave~eval", "userName": "dave"}, "node": "gpu-node-3",
         "phase": "Failed", "reason": "Evicted", "containers": [{"name": "worker", "state": "terminated",
                                                                 "reason": "Error", "exit_code": 137}]},
    ],
}  # fmt: skip


class _Fixed(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = [f for f in families if f.type != "histogram" and f.name != OBJECTS_TIMESTAMP.name]

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: Iterable[Metric], url: str) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry).decode().replace(url, URL)


def test_exposition_matches_the_golden_file(
    cluster: ClusterState, apiserver: KubeApiStandIn, make_collector: MakeCollector, update_golden: bool
) -> None:
    cluster.load_scenario(SCENARIO)
    text = render(make_collector().collect(), apiserver.url)
    if update_golden:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
