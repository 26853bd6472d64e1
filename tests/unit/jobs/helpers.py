"""Helpers for the jobs collector tests: collectors pointed at fixture trees, and a stable text exposition."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector as RegistryCollector

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.shared_model import GPU_STATE, GpuDevice, GpuProcess, GpuState
from tests.fixtures.jobs.generate import SCENARIOS, Owners, build

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "jobs"
NAMES = tuple(SCENARIOS)


class _Static(RegistryCollector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: Iterable[Metric]) -> str:
    """Text exposition with families sorted by name and samples sorted within each, so output order is stable."""
    lines: list[str] = []
    for family in sorted(families, key=lambda f: f.name):
        registry = CollectorRegistry()
        registry.register(_Static([family]))
        text = generate_latest(registry).decode().splitlines()
        lines += [line for line in text if line.startswith("#")]
        lines += sorted(line for line in text if not line.startswith("#"))
    return "\n".join(lines) + "\n"


def samples(families: Iterable[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric name: sorted label pairs -> value."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def load_gpu_state(path: Path) -> GpuState:
    raw = json.loads(path.read_text())
    return GpuState(
        devices=tuple(GpuDevice(**{**d, "mig_device_uuids": tuple(d["mig_device_uuids"])}) for d in raw["devices"]),
        processes=tuple(GpuProcess(**p) for p in raw["processes"]),
    )


def tree_options(tree: Path, **options: object) -> JobsOptions:
    """Options reading a fixture tree's runtime state (no docker or containerd socket)."""
    defaults: dict[str, object] = {
        "docker_socket": "",
        "containerd_socket": "",
        "containerd_state_dir": str(tree / "state" / "containerd"),
        "podman_graph_root": str(tree / "state" / "storage" / "graph"),
        "podman_run_root": str(tree / "state" / "storage" / "run"),
    }
    return JobsOptions(**{**defaults, **options})  # type: ignore[arg-type]


def tree_context(tree: Path) -> CollectorContext:
    return CollectorContext(node_name="node-1", proc_root=tree / "proc", sys_root=tree / "sys", rootfs=tree)


def tree_collector(
    tree: Path, clock: Callable[[], float] | None = None, gpu: bool = True, **options: object
) -> JobsCollector:
    """A collector reading a fixture tree, with the tree's GPU state (``gpu_state.json``) if any."""
    context = tree_context(tree)
    state_file = tree / "gpu_state.json"
    if gpu and state_file.exists():
        context.shared.publish(GPU_STATE, load_gpu_state(state_file))
    if clock is None:
        return JobsCollector(tree_options(tree, **options), context)
    return JobsCollector(tree_options(tree, **options), context, clock=clock)


def make_tree(scenario: str, destination: Path) -> tuple[Path, Owners]:
    """A fresh, writable tree of a scenario (built from ``tests/fixtures/jobs/generate.py``) and its GPU owners."""
    tree = destination / scenario
    return tree, build(scenario, tree)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
