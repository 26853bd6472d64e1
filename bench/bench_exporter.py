"""Scrape latency and memory of pai-job-exporter against the real node_exporter, side by side in one run.

Both run on 127.0.0.1 with their default collectors; scrapes alternate between them so that both see the same
machine load. Reports p50/p99 scrape latency and memory as ratios ours / node_exporter's. Memory is compared PSS
against PSS (proportional set size: shared library pages divided among the processes that map them), each summed
over the process and its children, so a GPU worker process is counted; RSS is printed beside it for reference.
The goal: our PSS at most 1.5 x node_exporter's. PSS divides shared pages among every process that maps them, so
other node_exporters (or Pythons) running on the machine lower the figures; the bench counts them and says so.

    python bench/bench_exporter.py [--scrapes 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def scrape(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
    return time.perf_counter() - start


def memory_bytes(pid: int) -> tuple[int, int, list[int]]:
    """(RSS, PSS), each summed over the process and its children, and the PSS of each of them (the process first)."""
    proc = psutil.Process(pid)
    rss = pss = 0
    each = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
        each.append(info.pss)
    return rss, pss, each


def _executable(pid: int) -> tuple[int, int] | None:
    """The (device, inode) of a process's executable: the same file, whatever mount namespace names it."""
    try:
        info = Path(f"/proc/{pid}/exe").stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def others_running(pid: int) -> int:
    """Other processes running the same executable file as ``pid`` (they share its pages, and so its PSS)."""
    mine = _executable(pid)
    return sum(1 for other in psutil.pids() if other != pid and mine is not None and _executable(other) == mine)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--with-hanging-collector",
        action="store_true",
        help="also run a test collector that blocks forever inside collect() (scrapes must not notice)",
    )
    args = parser.parse_args()
    node_exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if not node_exporter:
        print("the real node_exporter is needed: apt-get install prometheus-node-exporter", file=sys.stderr)
        return 2
    ours_port, theirs_port = free_port(), free_port()
    command = [sys.executable, "-m", "pai_monitoring.cli"]
    if args.with_hanging_collector:
        command = [
            sys.executable,
            "-m",
            "tests.support.run_exporter",
            "--collector.hang",
            "--collector.hang.hang-after=0",
        ]
    ours = subprocess.Popen(
        [*command, f"--web.listen-address=127.0.0.1:{ours_port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    theirs = subprocess.Popen(
        [node_exporter, f"--web.listen-address=127.0.0.1:{theirs_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ours_url, theirs_url = f"http://127.0.0.1:{ours_port}/metrics", f"http://127.0.0.1:{theirs_port}/metrics"
        wait_up(ours_url)
        wait_up(theirs_url)
        time.sleep(2)  # let the first collection cycles finish
        lat: dict[str, list[float]] = {"ours": [], "node_exporter": []}
        for _ in range(args.scrapes):
            lat["ours"].append(scrape(ours_url))
            lat["node_exporter"].append(scrape(theirs_url))
        ours_rss, ours_pss, ours_each = memory_bytes(ours.pid)
        theirs_rss, theirs_pss, _ = memory_bytes(theirs.pid)
        load = os.getloadavg()
        sharing = {"ours": others_running(ours.pid), "node_exporter": others_running(theirs.pid)}
    finally:
        for proc in (ours, theirs):
            proc.terminate()
            proc.wait(10)
    result = {
        "scrapes": args.scrapes,
        "load_average": load,
        "other_processes_of_the_same_executable": sharing,
        "p50_ms": {k: percentile(v, 0.5) * 1000 for k, v in lat.items()},
        "p99_ms": {k: percentile(v, 0.99) * 1000 for k, v in lat.items()},
        "mean_ms": {k: statistics.fmean(v) * 1000 for k, v in lat.items()},
        "pss_mib": {"ours": ours_pss / 2**20, "node_exporter": theirs_pss / 2**20},
        "pss_mib_per_process_ours": [b / 2**20 for b in ours_each],
        "rss_mib": {"ours": ours_rss / 2**20, "node_exporter": theirs_rss / 2**20},
    }
    result["ratios"] = {
        "p50": result["p50_ms"]["ours"] / result["p50_ms"]["node_exporter"],
        "p99": result["p99_ms"]["ours"] / result["p99_ms"]["node_exporter"],
        "memory_pss": ours_pss / theirs_pss,
    }
    print(
        f"scrape latency p50: ours {result['p50_ms']['ours']:.2f} ms, node_exporter "
        f"{result['p50_ms']['node_exporter']:.2f} ms, ratio {result['ratios']['p50']:.2f}"
    )
    print(
        f"scrape latency p99: ours {result['p99_ms']['ours']:.2f} ms, node_exporter "
        f"{result['p99_ms']['node_exporter']:.2f} ms, ratio {result['ratios']['p99']:.2f}"
    )
    print(
        f"memory PSS: ours {ours_pss / 2**20:.1f} MiB, node_exporter {theirs_pss / 2**20:.1f} MiB, ratio "
        f"{result['ratios']['memory_pss']:.2f} (RSS: ours {ours_rss / 2**20:.1f} MiB, node_exporter "
        f"{theirs_rss / 2**20:.1f} MiB)"
    )
    each = ", ".join(f"{b / 2**20:.1f} MiB" for b in ours_each)
    print(f"  ours per process (the exporter first, then its GPU worker): {each}")
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if any(sharing.values()):
        print(
            f"note: {sharing['node_exporter']} other node_exporter and {sharing['ours']} other Python processes ran "
            "the same executables and shared their pages: the PSS figures are lower than alone, the ratio skewed"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
