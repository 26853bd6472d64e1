"""Collection time of the ``jobs`` collector per cycle for 10, 100 and 1,000 synthetic containers.

Each size gets a fixture tree built by ``tests/fixtures/jobs/generate.py`` (cgroup v1, cgroupfs docker containers,
each a job with its own network namespace, identity from ``/proc/<pid>/environ``). The first cycle reads every
container's identity; later cycles reuse it, as a long-running exporter does. The figure to watch is the steady
cycle's CPU time per container (user + system of the collecting process: what the node pays, and far less disturbed
than wall time when other work shares the machine) and whether it stays flat as the count grows. A fixture tree
lives in the page cache, so this measures the collector's own work, not the kernel's.

``--baseline DIR`` measures another checkout's collector (for example ``git archive main | tar -x -C DIR``) on the
same trees in the same run, each measurement in a fresh process and the two alternating, ``--rounds`` times; the
table then shows both and their ratio (median of the rounds). Results go to stdout as a Markdown table and to
``--output`` as JSON. Nothing here asserts on time.

Usage::

    python bench/bench_jobs.py [--sizes 10,100,1000] [--cycles 20] [--baseline DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Result:
    containers: int
    first_cycle_ms: float
    steady_median_ms: float
    steady_p90_ms: float
    per_container_ms: float
    cpu_per_container_ms: float
    series: int


def measure(tree: Path, containers: int, cycles: int) -> Result:
    """Run the collector found on ``sys.path`` against ``tree`` (in this process)."""
    from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
    from pai_monitoring.runtime.collector import CollectorContext

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


def measure_in_process(source: Path, tree: Path, containers: int, cycles: int) -> Result:
    """A fresh interpreter importing ``pai_monitoring`` from ``source`` measures ``tree``."""
    command = [sys.executable, __file__, "--measure", str(tree), "--containers", str(containers)]
    command += ["--cycles", str(cycles)]
    env = {**os.environ, "PYTHONPATH": str(source / "collectors")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=1800)
    return Result(**json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="container counts, comma separated")
    parser.add_argument("--cycles", type=int, default=20, help="steady cycles measured per size")
    parser.add_argument("--baseline", type=Path, help="another checkout whose collector is measured alongside")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --baseline")
    parser.add_argument("--output", type=Path, default=REPO / ".cache" / "bench_jobs.json")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--containers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:  # the child of measure_in_process
        print(json.dumps(asdict(measure(args.measure, args.containers, args.cycles))))
        return 0
    sys.path[:0] = [str(REPO), str(REPO / "collectors")]
    from tests.fixtures.jobs.generate import build_synthetic

    sizes = [int(s) for s in args.sizes.split(",")]
    sources = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    results: dict[str, list[Result]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory(prefix="pai-bench-jobs-") as tmp:
        for size in sizes:
            tree = Path(tmp) / f"tree-{size}"
            build_synthetic(tree, size)
            rounds: dict[str, list[Result]] = {name: [] for name in sources}
            for _ in range(args.rounds if args.baseline else 1):
                for name, source in sources.items():
                    rounds[name].append(measure_in_process(source, tree, size, args.cycles))
            for name, runs in rounds.items():
                results[name].append(_median(runs))
    print(
        "| source | containers | first cycle (ms) | steady median (ms) | steady p90 (ms) | per container (ms) "
        "| CPU per container (ms) | series |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for r in rows:
            print(
                f"| {name} | {r.containers} | {r.first_cycle_ms:.1f} | {r.steady_median_ms:.1f} | "
                f"{r.steady_p90_ms:.1f} | {r.per_container_ms:.3f} | {r.cpu_per_container_ms:.3f} | {r.series} |"
            )
    if args.baseline:
        pairs = zip(sizes, results["this"], results["baseline"], strict=True)
        ratios = ", ".join(f"{n}: {t.cpu_per_container_ms / b.cpu_per_container_ms:.2f}" for n, t, b in pairs)
        print(f"\nCPU per container, this / baseline: {ratios}")
    print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({name: [asdict(r) for r in rows] for name, rows in results.items()}, indent=1))
    return 0


def _median(runs: list[Result]) -> Result:
    """Field by field median of repeated measurements of one size."""
    fields = {k: statistics.median(getattr(r, k) for r in runs) for k in asdict(runs[0])}
    return Result(**{**fields, "containers": runs[0].containers, "series": runs[0].series})


if __name__ == "__main__":
    sys.exit(main())
