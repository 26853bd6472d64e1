"""Collection time of the ``jobs`` collector per cycle for 10, 100 and 1,000 synthetic containers.

Each size gets a fixture tree built by ``tests/fixtures/jobs/generate.py`` (cgroup v1, cgroupfs docker containers,
each a job with its own network namespace, identity from ``/proc/<pid>/environ``). The first cycle reads every
container's identity; later cycles reuse it, as a long-running exporter does. The figure to watch is the steady
cycle's time per container (goal: at most 0.1 ms) and whether it stays flat as the count grows (linear growth).
A fixture tree lives in the page cache, so this measures the collector's own work, not the kernel's.

Results go to stdout as a Markdown table and to ``--output`` as JSON. Nothing here asserts on time.

Usage::

    python bench/bench_jobs.py [--sizes 10,100,1000] [--cycles 20] [--output .cache/bench_jobs.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "collectors"))

from pai_monitoring.jobs.collector import JobsCollector, JobsOptions  # noqa: E402
from pai_monitoring.runtime.collector import CollectorContext  # noqa: E402
from tests.fixtures.jobs.generate import build_synthetic  # noqa: E402


@dataclass(frozen=True)
class Result:
    containers: int
    first_cycle_ms: float
    steady_median_ms: float
    steady_p90_ms: float
    per_container_ms: float
    cpu_per_container_ms: float
    """CPU time (user + system) of the collecting process per container: what the node pays, and far less
    disturbed than wall time when other work shares the machine."""
    series: int


def measure(containers: int, cycles: int, workdir: Path) -> Result:
    tree = workdir / f"tree-{containers}"
    build_synthetic(tree, containers)
    context = CollectorContext(node_name="bench", proc_root=tree / "proc", sys_root=tree / "sys", rootfs=tree)
    options = JobsOptions(docker_socket="", containerd_socket="", containerd_state_dir="", podman_graph_root="")
    collector = JobsCollector(options, context)
    start = time.perf_counter()
    families = list(collector.collect())
    first = time.perf_counter() - start
    times = []
    cpu_times = []
    for _ in range(cycles):
        start, cpu_start = time.perf_counter(), time.process_time()
        families = list(collector.collect())
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    median = statistics.median(times)
    return Result(
        containers=containers,
        first_cycle_ms=first * 1e3,
        steady_median_ms=median * 1e3,
        steady_p90_ms=statistics.quantiles(times, n=10)[-1] * 1e3,
        per_container_ms=median * 1e3 / containers,
        cpu_per_container_ms=statistics.median(cpu_times) * 1e3 / containers,
        series=sum(len(f.samples) for f in families),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="container counts, comma separated")
    parser.add_argument("--cycles", type=int, default=20, help="steady cycles measured per size")
    parser.add_argument("--output", type=Path, default=REPO / ".cache" / "bench_jobs.json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="pai-bench-jobs-") as tmp:
        results = [measure(n, args.cycles, Path(tmp)) for n in sizes]
    print(
        "| containers | first cycle (ms) | steady median (ms) | steady p90 (ms) | per container (ms) "
        "| CPU per container (ms) | series |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.containers} | {r.first_cycle_ms:.1f} | {r.steady_median_ms:.1f} | {r.steady_p90_ms:.1f} "
            f"| {r.per_container_ms:.3f} | {r.cpu_per_container_ms:.3f} | {r.series} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
