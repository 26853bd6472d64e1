"""How long does one watchdog collection take on a large cluster, how much memory, and does it slow scrapes?

For each cluster size the bench starts three processes:

1. the Kubernetes API stand-in (``sim/kube_apiserver``) serving a synthetic cluster of N nodes and M pods, generated
   page by page (about 2.9 kB of JSON per pod, with env, mounts and managed fields like real pods);
2. a watchdog harness: the real ``kubernetes`` collector inside the real runtime (``CollectorRunner`` +
   ``ExporterServer``, as in ``pai-watchdog``), listening on a free port. It runs one collection (the warm-up, which
   fills the snapshot), stays idle for ``--idle`` seconds, runs a second collection, then reports its peak RSS;
3. this process, which scrapes ``/metrics`` from outside (as Prometheus would; one scrape starts every
   ``--scrape-every`` seconds, or as soon as the previous one ends) and sorts each scrape's latency into "idle" or
   "during a collection" by the harness's timestamps.

Figures: the time of each collection (wall clock, the collector thread's CPU time and the stand-in's CPU time over
the same span: on a quiet machine the wall time is about the sum of the two), peak RSS of the harness
(``ru_maxrss``: includes the interpreter and the client library), and scrape latency (median and max) idle vs during
a collection. Nothing here asserts on time; docs/watchdog.md quotes the figures.

Usage (from the repository root)::

    python bench/bench_watchdog.py                        # 500/15,000 and 5,000/150,000
    python bench/bench_watchdog.py --sizes 100:3000 --page-size 500
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# --- harness (child process) --------------------------------------------------------------------------------------


def harness(api_url: str, page_size: int, idle: float) -> None:
    """Runs in the child: the runtime with the kubernetes collector; prints JSON events on stdout."""
    from pai_monitoring.runtime.collector import CollectorContext
    from pai_monitoring.runtime.config import ListenAddress
    from pai_monitoring.runtime.exposition import HttpStats, http_exposition
    from pai_monitoring.runtime.http import ExporterServer
    from pai_monitoring.runtime.scheduler import CollectorRunner
    from pai_monitoring.runtime.webconfig import WebConfig
    from pai_monitoring.watchdog.collector import KubernetesCollector
    from pai_monitoring.watchdog.options import KubernetesOptions

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

    def event(kind: str, **data: Any) -> None:
        print(json.dumps({"event": kind, "t": time.time(), **data}), flush=True)

    with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as token:
        token.write("bench")
    # The harness starts each collection itself; a long interval keeps the runtime's expiry (2 x interval) from
    # dropping the warm-up snapshot while the measured collection runs on a loaded machine.
    options = KubernetesOptions(
        api_url=api_url, token_file=Path(token.name), page_size=page_size, interval=600, timeout=600, request_timeout=60
    )
    options.validate()
    runner = CollectorRunner("kubernetes", options, lambda: KubernetesCollector(options, CollectorContext()))
    stats = HttpStats()
    exposition = http_exposition("pai-watchdog", [runner], stats)
    server = ExporterServer(
        ListenAddress("127.0.0.1", 0), "pai-watchdog", exposition, [runner], WebConfig(), 10, 256, stats
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    event("listening", port=server.port, rss_mib=_rss_mib())
    for name in ("warmup", "measured"):
        event("cycle_start", name=name)
        start, cpu = time.monotonic(), time.thread_time()
        ok = runner.run_iteration()
        event("cycle_end", name=name, seconds=time.monotonic() - start, cpu_seconds=time.thread_time() - cpu, ok=ok,
              rss_mib=_rss_mib(),
              peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
        if name == "warmup":
            event("idle_start")
            time.sleep(idle)
            event("idle_end")
    event("done", peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    server.shutdown()
    Path(token.name).unlink()


def _rss_mib() -> float:
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- driver (this process) ----------------------------------------------------------------------------------------


@dataclass
class Scrape:
    start: float
    seconds: float
    size: int


@dataclass
class Result:
    nodes: int
    pods: int
    cycles: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    server_cpu: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    rss_after_warmup_mib: float = 0.0
    idle: list[Scrape] = field(default_factory=list)
    during: list[Scrape] = field(default_factory=list)


def _start_standin(nodes: int, pods: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kube_apiserver", "--port", "0", "--synthetic-nodes", str(nodes),
         "--synthetic-pods", str(pods), "--log-level", "warning"],
        cwd=REPO / "sim", stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening "):
        process.kill()
        raise RuntimeError(f"stand-in did not start: {line!r}")
    return process, line.split()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scraper(port: int, stop: threading.Event, out: list[Scrape], every: float) -> None:
    url = f"http://127.0.0.1:{port}/metrics"
    while not stop.is_set():
        start = time.time()
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                size = len(response.read())
        except OSError:
            time.sleep(0.05)
            continue
        out.append(Scrape(start, time.monotonic() - t0, size))
        stop.wait(max(0.0, every - (time.time() - start)))


def run_size(nodes: int, pods: int, page_size: int, idle: float, scrape_every: float) -> Result:
    standin, api_url = _start_standin(nodes, pods)
    result = Result(nodes, pods)
    env = {**os.environ, "PYTHONPATH": str(REPO / "collectors")}
    child = subprocess.Popen(
        [sys.executable, __file__, "--harness", api_url, "--page-size", str(page_size), "--idle", str(idle)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    scrapes: list[Scrape] = []
    stop = threading.Event()
    windows: dict[str, list[float]] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            if ev["event"] == "listening":
                threading.Thread(target=_scraper, args=(ev["port"], stop, scrapes, scrape_every), daemon=True).start()
            elif ev["event"] == "cycle_start":
                windows[ev["name"]] = [ev["t"]]
                result.server_cpu[ev["name"]] = -_cpu_seconds(standin.pid)
            elif ev["event"] == "cycle_end":
                windows[ev["name"]].append(ev["t"])
                result.cycles[ev["name"]] = ev["seconds"]
                result.cpu[ev["name"]] = ev["cpu_seconds"]
                result.server_cpu[ev["name"]] += _cpu_seconds(standin.pid)
                if not ev["ok"]:
                    print(f"  collection {ev['name']} failed", file=sys.stderr)
                if ev["name"] == "warmup":
                    result.rss_after_warmup_mib = ev["rss_mib"]
            elif ev["event"] in ("idle_start", "idle_end"):
                windows.setdefault("idle", []).append(ev["t"])
            elif ev["event"] == "done":
                result.peak_rss_mib = ev["peak_rss_mib"]
        child.wait(60)
    finally:
        stop.set()
        if child.poll() is None:
            child.kill()
        standin.terminate()
        standin.wait(30)
    for scrape in scrapes:
        end = scrape.start + scrape.seconds
        idle_window, cycle = windows.get("idle", [0, 0]), windows.get("measured", [0, 0])
        if idle_window[0] <= scrape.start and end <= idle_window[1]:
            result.idle.append(scrape)
        elif scrape.start < cycle[1] and end > cycle[0]:
            result.during.append(scrape)
    return result


def _stats(scrapes: list[Scrape]) -> str:
    if not scrapes:
        return "n/a"
    values = [s.seconds for s in scrapes]
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f} ms (n={len(values)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500:15000,5000:150000", help="NODES:PODS,... (default %(default)s)")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle scraping between the collections")
    parser.add_argument(
        "--scrape-every", type=float, default=1.0, help="seconds between scrape starts (default %(default)s)"
    )
    parser.add_argument("--output", type=Path, default=REPO / ".cache" / "bench_watchdog.json")
    parser.add_argument("--harness", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.harness:
        harness(args.harness, args.page_size, args.idle)
        return 0
    results = []
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        "| nodes | pods | collection wall (warm-up / measured) | collector thread CPU | stand-in CPU | peak RSS"
        " | RSS after warm-up"
        " | scrape idle (median / max) | scrape during collection (median / max) | exposition size |"
    )
    print("|---:|---:|---|---|---|---:|---:|---|---|---:|")
    for size in args.sizes.split(","):
        nodes, pods = (int(v) for v in size.split(":"))
        r = run_size(nodes, pods, args.page_size, args.idle, args.scrape_every)
        exposition = max((s.size for s in r.idle + r.during), default=0)
        cells = [
            f"{nodes:,}",
            f"{pods:,}",
            f"{r.cycles.get('warmup', 0):.1f} s / {r.cycles.get('measured', 0):.1f} s",
            f"{r.cpu.get('warmup', 0):.1f} s / {r.cpu.get('measured', 0):.1f} s",
            f"{r.server_cpu.get('warmup', 0):.1f} s / {r.server_cpu.get('measured', 0):.1f} s",
            f"{r.peak_rss_mib:.0f} MiB",
            f"{r.rss_after_warmup_mib:.0f} MiB",
            _stats(r.idle),
            _stats(r.during),
            f"{exposition / 2**20:.1f} MiB",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
        results.append(
            {
                "nodes": nodes,
                "pods": pods,
                "page_size": args.page_size,
                "load_average": os.getloadavg()[0],
                "cycles_seconds": r.cycles,
                "cycles_cpu_seconds": r.cpu,
                "standin_cpu_seconds": r.server_cpu,
                "peak_rss_mib": r.peak_rss_mib,
                "rss_after_warmup_mib": r.rss_after_warmup_mib,
                "scrape_idle_seconds": [s.seconds for s in r.idle],
                "scrape_during_seconds": [s.seconds for s in r.during],
                "exposition_bytes": exposition,
            }
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
