"""Cost of the ``gpu`` collector per cycle for 8 and 16 GPUs of the simulated NVML library (a stand-in for GPUs).

The simulated GPUs are Hopper-like: GPM profiling on, 18 NVLinks each, a process with per-process utilisation, so
that the cycle includes the GPM sample and metrics, the field-value call and the utilisation call of every GPU. A
library without those calls (an older build of this repository) ignores those scenario lines: run this script from
both checkouts with the same arguments to compare.

Two parts:

1. In-process: the collector's ``collect()`` in a loop. Per cycle: wall time, NVML calls per GPU (counted in the
   worker), time spent inside the library (measured around each call in the worker), and the collector's own overhead
   = wall time - library time (pickling, the pipe, building families). Goal: overhead at most 2 ms per GPU.
2. A real ``pai-job-exporter`` process with only the ``gpu`` collector at a 1 s interval for ``--seconds``: CPU time
   per cycle (exporter and worker together), PSS summed over both processes, processes spawned in steady state, and
   the RSS of ``prometheus-node-exporter`` measured in the same run. Goal: PSS at most 1.5 x node_exporter's RSS.

The simulated library answers from memory, so "time inside the library" here is close to zero, unlike a real driver
(about 0.36 ms per call on a K40m, per gpustat#76). Its Xid wait loop wakes every 20 ms, which shows up as worker CPU
that a real driver's blocking wait would not use. Nothing here asserts on time.

Usage::

    python bench/bench_gpu.py [--gpus 8,16] [--cycles 50] [--seconds 20] [--output .cache/bench_gpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "collectors"))

from pai_monitoring import registry  # noqa: E402
from pai_monitoring.gpu.collector import GpuCollector, GpuOptions  # noqa: E402
from pai_monitoring.runtime.collector import CollectorContext  # noqa: E402

HTTP_TIMEOUT_SECONDS = 5.0
START_TIMEOUT_SECONDS = 20.0


@dataclass
class InProcess:
    gpus: int
    cycles: int
    cycle_ms_median: float
    cycle_ms_p95: float
    nvml_calls_per_gpu: float
    library_ms_median: float
    overhead_ms_per_gpu: float
    workers_spawned: int


@dataclass
class Exporter:
    gpus: int
    seconds: float
    cycles: int
    cpu_ms_per_cycle: float
    exporter_cpu_ms_per_cycle: float
    worker_cpu_ms_per_cycle: float
    pss_mib: float
    processes: int
    spawned_in_steady_state: int
    node_exporter_rss_mib: float | None
    pss_over_node_exporter: float | None


def build_library() -> Path:
    spec = importlib.util.spec_from_file_location("nvml_sim_build", REPO / "sim" / "nvml" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out: Path = module.build()
    return out


NVLINKS = 18


def scenario_text(gpus: int) -> str:
    lines = [f"gpu_count = {gpus}"]
    for i in range(gpus):
        lines += [
            f"gpu.{i}.name = NVIDIA H200",
            f"gpu.{i}.utilization.gpu = {50 + i}",
            f"gpu.{i}.memory.used = {(i + 1) << 30}",
            f"gpu.{i}.process.0 = {10000 + i} {(i + 1) << 30}",
            f"gpu.{i}.process_util.0 = {10000 + i} {40 + i} {10 + i}",
            f"gpu.{i}.clocks_event_reasons = 0x4",
            f"gpu.{i}.gpm.supported = 1",
            f"gpu.{i}.gpm.sm = {30 + i}",
            f"gpu.{i}.gpm.tensor = {20 + i}",
            f"gpu.{i}.nvlink.count = {NVLINKS}",
            f"gpu.{i}.nvlink.0.tx_kib = {1000 * (i + 1)}",
        ]
    return "\n".join(lines) + "\n"


# GPM takes a new sample only when 100 ms have passed since the last one: cycles are spaced at least this far apart
# (outside the timed part), as a collector's interval of seconds would be.
CYCLE_SPACING_SECONDS = 0.12


def in_process(gpus: int, cycles: int) -> InProcess:
    collector = GpuCollector(GpuOptions(timeout=20.0), CollectorContext(node_name="bench"))
    try:
        for _ in range(3):
            list(collector.collect())
            time.sleep(CYCLE_SPACING_SECONDS)
        walls: list[float] = []
        library: list[float] = []
        calls: list[int] = []
        for _ in range(cycles):
            time.sleep(CYCLE_SPACING_SECONDS)
            start = time.perf_counter()
            list(collector.collect())
            walls.append(time.perf_counter() - start)
            snapshot = collector.last_snapshot
            assert snapshot is not None
            library.append(snapshot.library_seconds)
            calls.append(snapshot.nvml_calls)
        overhead = [w - lib for w, lib in zip(walls, library, strict=True)]
        return InProcess(
            gpus=gpus,
            cycles=cycles,
            cycle_ms_median=statistics.median(walls) * 1e3,
            cycle_ms_p95=sorted(walls)[int(0.95 * (len(walls) - 1))] * 1e3,
            nvml_calls_per_gpu=statistics.mean(calls) / gpus,
            library_ms_median=statistics.median(library) * 1e3,
            overhead_ms_per_gpu=statistics.median(overhead) * 1e3 / gpus,
            workers_spawned=collector.supervisor.spawned,
        )
    finally:
        collector.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HTTP_TIMEOUT_SECONDS) as response:
        body: bytes = response.read()
    return body.decode()


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def iterations(body: str) -> int:
    for line in body.splitlines():
        if line.startswith('collector_iteration_count_total{name="gpu"}'):
            return int(float(line.split()[-1]))
    return 0


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def node_exporter_rss() -> float | None:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port, process)
        for _ in range(3):
            scrape(port)
        return float(psutil.Process(process.pid).memory_info().rss) / 2**20
    finally:
        process.terminate()
        process.wait(10)


def real_exporter(gpus: int, seconds: float, node_rss: float | None) -> Exporter:
    port = free_port()
    others = [f"--no-collector.{name}" for name in registry.JOB_EXPORTER if name != "gpu"]
    code = "import sys; from pai_monitoring.cli import job_exporter_main; sys.exit(job_exporter_main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "collectors")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            f"--web.listen-address=127.0.0.1:{port}",
            "--node-name=bench",
            *others,
            "--collector.gpu",
            "--collector.gpu.interval=1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        exporter = psutil.Process(process.pid)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while iterations(scrape(port)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = exporter.children(recursive=True)
        worker_pids = {p.pid for p in workers}
        start_iter = iterations(scrape(port))
        cpu0 = cpu_seconds(exporter)
        wcpu0 = sum(cpu_seconds(w) for w in workers)
        time.sleep(seconds)
        end_iter = iterations(scrape(port))
        cpu1 = cpu_seconds(exporter)
        now_workers = exporter.children(recursive=True)
        wcpu1 = sum(cpu_seconds(w) for w in now_workers if w.pid in worker_pids)
        spawned = len({p.pid for p in now_workers} - worker_pids)
        procs = [exporter, *now_workers]
        pss = sum(float(p.memory_full_info().pss) for p in procs) / 2**20
        cycles = max(1, end_iter - start_iter)
        return Exporter(
            gpus=gpus,
            seconds=seconds,
            cycles=cycles,
            cpu_ms_per_cycle=((cpu1 - cpu0) + (wcpu1 - wcpu0)) * 1e3 / cycles,
            exporter_cpu_ms_per_cycle=(cpu1 - cpu0) * 1e3 / cycles,
            worker_cpu_ms_per_cycle=(wcpu1 - wcpu0) * 1e3 / cycles,
            pss_mib=pss,
            processes=len(procs),
            spawned_in_steady_state=spawned,
            node_exporter_rss_mib=node_rss,
            pss_over_node_exporter=pss / node_rss if node_rss else None,
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="8,16")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    lib = build_library()
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib), os.environ.get("LD_LIBRARY_PATH", "")])
    node_rss = node_exporter_rss()
    results: dict[str, list[dict[str, object]]] = {"in_process": [], "exporter": []}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for gpus in (int(x) for x in args.gpus.split(",")):
            path = Path(tmp) / f"scenario-{gpus}.conf"
            path.write_text(scenario_text(gpus))
            os.environ["PAI_NVML_SIM_SCENARIO"] = str(path)
            results["in_process"].append(asdict(in_process(gpus, args.cycles)))
            results["exporter"].append(asdict(real_exporter(gpus, args.seconds, node_rss)))
    for part, rows in results.items():
        print(f"\n### {part}\n")
        keys = list(rows[0])
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
            print("| " + " | ".join(cells) + " |")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
