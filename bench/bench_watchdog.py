"""The watchdog on a large cluster: the watch cache against listing everything every collection, side by side.

For each design (``list``: ``--collector.kubernetes.watch=false``; ``watch``: the default) the bench starts:

1. the Kubernetes API stand-in (``sim/kube_apiserver``) serving a synthetic cluster of N nodes and M pods (about
   2.9 kB of JSON per pod, with env, mounts and managed fields like real pods), with its control port;
2. a harness process: the real ``kubernetes`` collector inside the runtime's ``CollectorRunner`` (collection and
   rendering of the exposition, as in ``pai-watchdog``). It runs the first collection (for ``watch``: the initial
   list of the informers, then the first build), then ``--cycles`` more, ``--gap`` seconds apart;
3. in this process, after the first collection, a churn thread that changes ``--churn`` pods per second through
   the control port (running <-> crash-looping: one ``MODIFIED`` watch event each), as a busy cluster does.

Figures: wall time and CPU time (the collector thread's; and the whole harness's, informer threads included) of
the first collection and of the later ones; peak RSS of the harness (``ru_maxrss``: interpreter and client library
included); and what the API server had to serve (requests and bytes, from the stand-in's counters) over the
window of the later collections, scaled to requests per minute at the default interval of 30 s; and the series
in the collector's exposition after the last collection. The machine's
load average is printed next to the figures: on a shared machine wall times are inflated, CPU times much less.
Nothing asserts on time; docs/watchdog.md and docs/scaling.md quote the figures.

Usage (from the repository root)::

    python bench/bench_watchdog.py                          # 5,000 nodes / 150,000 pods, both designs
    python bench/bench_watchdog.py --nodes 500 --pods 15000 --designs watch
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
INTERVAL_S = 30.0
"""The collector's default interval: requests per minute are scaled to it."""


# --- harness (child process) --------------------------------------------------------------------------------------


def harness(api_url: str, page_size: int, watch: bool, cycles: int, gap: float) -> None:
    """Runs in the child: the runtime with the kubernetes collector; prints JSON events on stdout."""
    from pai_monitoring.runtime.collector import CollectorContext
    from pai_monitoring.runtime.scheduler import CollectorRunner
    from pai_monitoring.watchdog.collector import KubernetesCollector
    from pai_monitoring.watchdog.options import KubernetesOptions

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")

    def event(kind: str, **data: Any) -> None:
        print(json.dumps({"event": kind, "t": time.time(), **data}), flush=True)

    with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as token:
        token.write("bench")
    # The harness starts each collection itself; long interval and timeout keep the runtime's expiry (2 x (interval
    # + timeout)) from discarding the first collection (the initial list) on a loaded machine.
    options = KubernetesOptions(
        api_url=api_url, token_file=Path(token.name), page_size=page_size, interval=600, timeout=600,
        request_timeout=60, watch=watch,
    )  # fmt: skip
    options.validate()
    runner = CollectorRunner("kubernetes", options, lambda: KubernetesCollector(options, CollectorContext()))
    event("ready")
    for index in range(cycles + 1):
        if index:
            time.sleep(gap)  # pacing, as the interval paces collections
        start, thread_cpu, process_cpu = time.monotonic(), time.thread_time(), time.process_time()
        ok = runner.run_iteration()
        seconds, cpu, all_cpu = (
            time.monotonic() - start,
            time.thread_time() - thread_cpu,
            time.process_time() - process_cpu,
        )
        snapshot = runner.status().snapshot
        text = b"" if snapshot is None else snapshot.rendered
        event(
            "cycle",
            index=index,
            ok=ok,
            seconds=seconds,
            thread_cpu=cpu,
            process_cpu=all_cpu,
            peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            series=text.count(b"\n") - text.count(b"\n#") - text.startswith(b"#"),  # sample lines, no copies
        )
    event("done", peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    runner.stop()
    Path(token.name).unlink()


# --- driver (this process) ----------------------------------------------------------------------------------------


@dataclass
class Result:
    design: str
    first: dict[str, float] = field(default_factory=dict)
    later: list[dict[str, float]] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    window_s: float = 0.0
    traffic: dict[str, int] = field(default_factory=dict)
    harness_cpu_s: float = 0.0
    standin_cpu_s: float = 0.0
    churned: int = 0
    failed: int = 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _control(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _start_standin(nodes: int, pods: int) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kube_apiserver", "--port", "0", "--control-port", "0", "--synthetic-nodes",
         str(nodes), "--synthetic-pods", str(pods), "--log-level", "warning"],
        cwd=REPO / "sim", stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()  # "listening http://127.0.0.1:PORT control=PORT"
    if not line.startswith("listening "):
        process.kill()
        raise RuntimeError(f"stand-in did not start: {line!r}")
    api, control = line.split()[1], line.split()[2].removeprefix("control=")
    return process, api, f"http://127.0.0.1:{control}"


def _churn(control: str, per_second: int, stop: threading.Event, result: Result) -> None:
    while not stop.wait(1.0):
        result.churned += int(_control(control, "/churn", {"pods": per_second})["changed"])


def run_design(design: str, args: argparse.Namespace) -> Result:
    standin, api_url, control = _start_standin(args.nodes, args.pods)
    result = Result(design)
    env = {**os.environ, "PYTHONPATH": str(REPO / "collectors")}
    child = subprocess.Popen(
        [sys.executable, __file__, "--harness", api_url, "--design", design, "--page-size", str(args.page_size),
         "--cycles", str(args.cycles), "--gap", str(args.gap)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    stop = threading.Event()
    start_traffic: dict[str, int] = {}
    start_cpu = (0.0, 0.0)
    window_start = 0.0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            if ev["event"] == "cycle":
                result.failed += 0 if ev["ok"] else 1
                if ev["index"] == 0:
                    result.first = ev
                    start_traffic = _control(control, "/requests")
                    start_cpu = (_cpu_seconds(child.pid), _cpu_seconds(standin.pid))
                    window_start = time.monotonic()
                    threading.Thread(target=_churn, args=(control, args.churn, stop, result), daemon=True).start()
                else:
                    result.later.append(ev)
                if ev["index"] == args.cycles:  # the last one: close the window before the harness exits
                    result.window_s = time.monotonic() - window_start
                    end = _control(control, "/requests")
                    result.traffic = {key: end[key] - start_traffic.get(key, 0) for key in end}
                    result.harness_cpu_s = _cpu_seconds(child.pid) - start_cpu[0]
                    result.standin_cpu_s = _cpu_seconds(standin.pid) - start_cpu[1]
                    stop.set()
            elif ev["event"] == "done":
                result.peak_rss_mib = ev["peak_rss_mib"]
        child.wait(120)
    finally:
        stop.set()
        if child.poll() is None:
            child.kill()
        standin.terminate()
        standin.wait(30)
    return result


def _per_minute(result: Result, key: str) -> float:
    """What the design asks of the API server per minute when it collects every 30 s.

    Listing: everything a collection requests happens once per collection. Watching: a collection sends only the
    health check; watch (re)opens and relists happen at their own pace, measured over the window.
    """
    cycles = max(1, len(result.later))
    if result.design == "list":
        return result.traffic.get(key, 0) / cycles * (60.0 / INTERVAL_S)
    health = result.traffic.get("other_requests", 0) / cycles * (60.0 / INTERVAL_S)
    if key == "other_requests":
        return health
    return result.traffic.get(key, 0) * 60.0 / max(result.window_s, 1e-9)


def report(results: list[Result], args: argparse.Namespace, load_start: tuple[float, ...]) -> None:
    print(f"cluster: {args.nodes:,} nodes, {args.pods:,} pods; churn {args.churn} pods/s; page size {args.page_size}")
    print(f"load average (1/5/15 min) at start: {' / '.join(f'{v:.1f}' for v in load_start)}, "
          f"at end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")  # fmt: skip
    print()
    print(
        "| design | first collection: wall / collector CPU | later collections: wall median (max) "
        "| collector CPU median | peak RSS | series | API requests/min at 30 s (list + watch + health) "
        "| MB/min served | harness CPU s/min | stand-in CPU s/min |"
    )
    print("|---|---|---|---|---:|---:|---|---:|---:|---:|")
    for r in results:
        walls = [c["seconds"] for c in r.later] or [0.0]
        cpus = [c["thread_cpu"] for c in r.later] or [0.0]
        per_min = {k: _per_minute(r, k) for k in ("list_requests", "watch_requests", "other_requests")}
        megabytes = (
            r.traffic.get("bytes_sent", 0) / max(1, len(r.later)) * (60.0 / INTERVAL_S)
            if r.design == "list"
            else r.traffic.get("bytes_sent", 0) * 60.0 / max(r.window_s, 1e-9)
        ) / 1e6
        cells = [
            r.design,
            f"{r.first.get('seconds', 0):.1f} s / {r.first.get('thread_cpu', 0):.1f} s",
            f"{statistics.median(walls):.2f} s ({max(walls):.2f} s)",
            f"{statistics.median(cpus):.2f} s",
            f"{r.peak_rss_mib:.0f} MiB",
            f"{int((r.later or [r.first])[-1].get('series', 0)):,}",
            f"{sum(per_min.values()):.1f} ({per_min['list_requests']:.1f} + {per_min['watch_requests']:.1f} + "
            f"{per_min['other_requests']:.1f})",
            f"{megabytes:.2f}",
            f"{r.harness_cpu_s * 60 / max(r.window_s, 1e-9):.1f}",
            f"{r.standin_cpu_s * 60 / max(r.window_s, 1e-9):.1f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
        if r.failed:
            print(f"  ({r.failed} collections of {r.design} failed)")
    print()
    print("later collections: wall seconds per collection, in order:")
    for r in results:
        walls = ", ".join(f"{c['seconds']:.2f}" for c in r.later)
        print(f"  {r.design}: {walls} (churned {r.churned} pods)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--designs", default="list,watch", help="list, watch or both (default %(default)s)")
    parser.add_argument("--cycles", type=int, default=4, help="collections after the first (default %(default)s)")
    parser.add_argument("--gap", type=float, default=10.0, help="seconds between collections (default %(default)s)")
    parser.add_argument("--churn", type=int, default=50, help="pods changed per second (default %(default)s)")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--output", type=Path, default=REPO / ".cache" / "bench_watchdog.json")
    parser.add_argument("--harness", help=argparse.SUPPRESS)
    parser.add_argument("--design", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.harness:
        harness(args.harness, args.page_size, args.design == "watch", args.cycles, args.gap)
        return 0
    load_start = os.getloadavg()
    results = [run_design(design, args) for design in args.designs.split(",")]
    report(results, args, load_start)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "nodes": args.nodes,
                "pods": args.pods,
                "churn_per_second": args.churn,
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
                "results": [r.__dict__ for r in results],
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
