"""Fixtures for GPU collector tests on the simulated NVML library (a stand-in for GPUs we do not have).

The library is compiled once per session from ``sim/nvml/nvml_sim.c``; each test gets its own scenario file, and
``LD_LIBRARY_PATH`` / ``PAI_NVML_SIM_SCENARIO`` are set so that the collector's worker process (which inherits the
environment) loads the simulated ``libnvidia-ml.so.1`` through the real ``pynvml`` binding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu.collector import GpuCollector, GpuOptions
from pai_monitoring.runtime.board import SharedState
from pai_monitoring.runtime.collector import CollectorContext
from tests.support.modules import load_file

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "gpu"
NODE_NAME = "gpu-test-node"


def _load_builder() -> Callable[[], Path]:
    build: Callable[[], Path] = load_file(REPO / "sim" / "nvml" / "build.py", "nvml_sim_build").build
    return build


@pytest.fixture(scope="session")
def nvml_sim_lib() -> Path:
    """Directory holding the simulated ``libnvidia-ml.so.1``."""
    return _load_builder()()


class Scenario:
    """The scenario file of one test; rewritten atomically so the library never reads half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = ""

    def write(self, text: str) -> None:
        self.text = text
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)

    def append(self, text: str) -> None:
        self.write(self.text + text)


def uuid_of(index: int) -> str:
    """The UUID :func:`gpus` gives GPU ``index``."""
    return f"GPU-{index:08x}-1111-2222-3333-444444444444"


def gpu_id(index: int, minor: int | str | None = None, uuid: str | None = None) -> dict[str, str]:
    """The identity labels of GPU ``index`` of a :func:`gpus` scenario (minor number = index unless given)."""
    return {
        "node_name": NODE_NAME,
        "index": str(index),
        "uuid": uuid_of(index) if uuid is None else uuid,
        "minor_number": str(index if minor is None else minor),
    }


NODE = {"node_name": NODE_NAME}
"""The labels of the node-level families."""


def gpus(count: int, **per_gpu: object) -> str:
    """A scenario with ``count`` healthy GPUs; keyword arguments become ``gpu.<i>.<key> = value`` on every GPU."""
    lines = [f"gpu_count = {count}"]
    for index in range(count):
        lines.append(f"gpu.{index}.uuid = {uuid_of(index)}")
        lines.append(f"gpu.{index}.utilization.gpu = {10 + index}")
        lines.append(f"gpu.{index}.memory.total = 17179869184")
        lines.append(f"gpu.{index}.memory.used = {index * 1048576}")
        lines.extend(f"gpu.{index}.{key.replace('__', '.')} = {value}" for key, value in per_gpu.items())
    return "\n".join(lines) + "\n"


@pytest.fixture
def scenario(tmp_path: Path, nvml_sim_lib: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    path = tmp_path / "scenario.conf"
    monkeypatch.setenv("LD_LIBRARY_PATH", os.pathsep.join([str(nvml_sim_lib), os.environ.get("LD_LIBRARY_PATH", "")]))
    monkeypatch.setenv("PAI_NVML_SIM_SCENARIO", str(path))
    return Scenario(path)


MakeCollector = Callable[..., GpuCollector]

# GPM needs 100 ms between two samples (and serves the previous window's figures to a collection that comes sooner):
# the collector runs at an interval of seconds. Tests that look at profiling figures collect no faster than this.
PROFILING_WINDOW_SECONDS = 0.1
_last_collection: dict[int, float] = {}


def collect_paced(collector: GpuCollector) -> list[Metric]:
    """One collection, at least GPM's shortest window after this collector's previous one (as at any real interval)."""
    previous = _last_collection.get(id(collector))
    if previous is not None:
        time.sleep(max(0.0, previous + PROFILING_WINDOW_SECONDS - time.monotonic()))
    found = list(collector.collect())
    _last_collection[id(collector)] = time.monotonic()
    return found


@pytest.fixture
def make_collector() -> Iterator[MakeCollector]:
    """Build GPU collectors with a fresh context; their workers are stopped at the end of the test."""
    made: list[GpuCollector] = []

    def make(clock: Callable[[], float] = time.time, **options: object) -> GpuCollector:
        opts = GpuOptions(**{"timeout": 5.0, **options})  # type: ignore[arg-type]
        opts.validate()
        context = CollectorContext(node_name=NODE_NAME, shared=SharedState())
        collector = GpuCollector(opts, context, clock=clock)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


def render(families: Iterable[Metric]) -> str:
    """The text exposition of some families, as a scrape would show them."""
    fams = list(families)

    class _Fixed:
        def collect(self) -> Iterable[Metric]:
            return fams

    registry = CollectorRegistry()
    registry.register(_Fixed())
    return generate_latest(registry).decode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def series(found: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in found if n == name]
