"""How many nodes can one Prometheus serve? Measure it on this machine.

The bench runs Debian's ``prometheus`` binary on 127.0.0.1 against synthetic nodes. Each synthetic node is two
targets shaped like a real GPU node of this suite: a node_exporter-sized exposition (``--node-series`` series, default
1000) and a job-exporter-sized one (``--exporter-series``, default 220: 8 GPUs, a few jobs and the runtime
metrics). All targets are served by one small threaded HTTP server in this process, on one port, with one path per
target; values change on every scrape so that the TSDB compresses realistic data, not constants.

For each node count in ``--nodes`` the bench starts a fresh Prometheus (empty TSDB), lets it settle, then reads its
own metrics: CPU seconds per second, resident memory, head series, samples appended per second and the scrape
duration. With ``--remote-write`` it also starts Debian's ``victoria-metrics`` on 127.0.0.1 and makes Prometheus
``remote_write`` to it, to show the cost of shipping every sample to a scale-out store.

Results go to stdout as a Markdown table and to ``--output`` as JSON (default ``.cache/bench_prometheus_scale.json``).
Nothing here asserts on time: docs/scaling.md quotes the figures.

Usage::

    python bench/bench_prometheus_scale.py --nodes 50,200,500 --settle 60 --measure 60 [--remote-write]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

HTTP_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 60.0
GPUS_PER_NODE = 8


def node_exporter_lines(series: int, rng: random.Random) -> list[str]:
    """A node_exporter-like exposition: CPU, memory, disk, network and filesystem families."""
    lines: list[str] = []
    families = (
        "node_cpu_seconds_total",
        "node_network_receive_bytes_total",
        "node_disk_read_bytes_total",
        "node_filesystem_avail_bytes",
        "node_memory_bytes",
    )
    per_family = max(1, series // len(families))
    for family in families:
        lines.append(f"# TYPE {family} {'counter' if family.endswith('_total') else 'gauge'}")
        for i in range(per_family):
            lines.append(f'{family}{{device="d{i}",mode="m{i % 8}"}} {rng.random() * 1e9:.3f}')
    return lines


def job_exporter_lines(series: int, rng: random.Random) -> list[str]:
    """A job-exporter-like exposition: per-GPU metrics for 8 GPUs, per-job task metrics, runtime metrics."""
    lines: list[str] = []
    gpu_families = (
        "nvidiasmi_utilization_gpu",
        "nvidiasmi_utilization_memory",
        "gpu_utilization",
        "gpu_mem_utilization",
        "nvidiasmi_temperature",
        "nvidiasmi_performance_state",
    )
    for family in gpu_families:
        lines.append(f"# TYPE {family} gauge")
        for gpu in range(GPUS_PER_NODE):
            lines.append(f'{family}{{minor_number="{gpu}"}} {rng.random() * 100:.1f}')
    lines.append("# TYPE nvidiasmi_ecc_error_count gauge")
    for gpu in range(GPUS_PER_NODE):
        for kind in ("single", "double"):
            lines.append(f'nvidiasmi_ecc_error_count{{minor_number="{gpu}",type="{kind}"}} 0')
    task_families = (
        "task_cpu_percent",
        "task_mem_usage_byte",
        "task_mem_limit_byte",
        "task_mem_usage_percent",
        "task_block_in_byte",
        "task_block_out_byte",
        "task_net_in_byte",
        "task_net_out_byte",
    )
    remaining = max(0, series - len(lines))
    jobs = max(1, remaining // len(task_families))
    for family in task_families:
        lines.append(f"# TYPE {family} gauge")
        for job in range(jobs):
            lines.append(
                f'{family}{{job_name="job{job}",username="u{job % 5}",role_name="worker",task_index="0"}} '
                f"{rng.random() * 1e6:.1f}"
            )
    return lines


class SyntheticNodes:
    """Serves ``/node/<i>/<kind>`` for ``count`` synthetic nodes; each response is regenerated every call."""

    def __init__(self, count: int, node_series: int, exporter_series: int) -> None:
        self.count = count
        self.node_series = node_series
        self.exporter_series = exporter_series
        self._rng = random.Random(42)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # a few pre-rendered variants per kind, rotated per request: realistic changing values, little CPU here
        self._variants = {
            "node": [self._render(node_exporter_lines(node_series, self._rng)) for _ in range(4)],
            "exporter": [self._render(job_exporter_lines(exporter_series, self._rng)) for _ in range(4)],
        }
        self._calls = 0

    @staticmethod
    def _render(lines: list[str]) -> bytes:
        return ("\n".join(lines) + "\n").encode()

    def body(self, kind: str) -> bytes | None:
        variants = self._variants.get(kind)
        if variants is None:
            return None
        with self._lock:
            self._calls += 1
            return variants[self._calls % len(variants)]

    def start(self) -> int:
        nodes = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                body = nodes.body(parts[2]) if len(parts) == 3 and parts[0] == "node" else None
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def file_sd(self, port: int) -> list[dict[str, object]]:
        groups: list[dict[str, object]] = []
        for i in range(self.count):
            for kind, job_port in (("node", 9100), ("exporter", 9102)):
                groups.append(
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {
                            "__metrics_path__": f"/node/{i}/{kind}",
                            "instance": f"node{i}:{job_port}",
                            "kind": kind,
                        },
                    }
                )
        return groups


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S):
            return
        time.sleep(0.5)
    msg = f"{url} did not answer within {timeout:.0f}s"
    raise TimeoutError(msg)


def query(base: str, expr: str) -> float:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
        data = json.load(resp)
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


@contextlib.contextmanager
def victoria_metrics(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        msg = "victoria-metrics not found: apt-get install victoria-metrics (with a policy-rc.d that exits 101)"
        raise SystemExit(msg)
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir / 'vm'}", "-retentionPeriod=1d"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()


@dataclass
class Result:
    nodes: int
    targets: int
    scrape_interval_s: float
    head_series: float
    samples_per_s: float
    cpu_cores: float
    rss_mib: float
    rss_kib_per_series: float
    scrape_duration_p99_ms: float
    remote_write: bool
    remote_write_samples_per_s: float
    vm_cpu_cores: float
    vm_rss_mib: float


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / 100.0


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(args: argparse.Namespace, count: int, remote_write: bool) -> Result:
    binary = shutil.which("prometheus")
    if binary is None:
        msg = "prometheus not found: apt-get install prometheus (with a policy-rc.d that exits 101)"
        raise SystemExit(msg)
    nodes = SyntheticNodes(count, args.node_series, args.exporter_series)
    with tempfile.TemporaryDirectory(prefix="pai-bench-prom-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        port = nodes.start()
        stack.callback(nodes.stop)
        (workdir / "targets.json").write_text(json.dumps(nodes.file_sd(port)))
        prom_port = free_port()
        interval = f"{round(args.scrape_interval * 1000)}ms"
        config: dict[str, object] = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [
                {"job_name": "synthetic", "file_sd_configs": [{"files": [str(workdir / "targets.json")]}]},
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
            ],
        }
        vm_proc: subprocess.Popen[bytes] | None = None
        if remote_write:
            vm_url, vm_proc = stack.enter_context(victoria_metrics(workdir))
            config["remote_write"] = [{"url": f"{vm_url}/api/v1/write"}]
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        prom = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "prometheus.log").open("wb"),
        )
        stack.callback(prom.wait, 20)
        stack.callback(prom.terminate)
        base = f"http://127.0.0.1:{prom_port}"
        try:
            wait_http(f"{base}/-/ready")
        except TimeoutError:
            print((workdir / "prometheus.log").read_text()[-3000:])
            raise
        time.sleep(args.settle)
        cpu0, vm_cpu0, t0 = proc_cpu_seconds(prom.pid), vm_proc and proc_cpu_seconds(vm_proc.pid), time.monotonic()
        appended0 = query(base, "prometheus_tsdb_head_samples_appended_total")
        sent0 = query(base, "sum(prometheus_remote_storage_samples_total)") if remote_write else 0.0
        time.sleep(args.measure)
        elapsed = time.monotonic() - t0
        cpu = (proc_cpu_seconds(prom.pid) - cpu0) / elapsed
        samples = (query(base, "prometheus_tsdb_head_samples_appended_total") - appended0) / elapsed
        sent = ((query(base, "sum(prometheus_remote_storage_samples_total)") - sent0) / elapsed) if remote_write else 0
        head = query(base, "prometheus_tsdb_head_series")
        rss = proc_rss_mib(prom.pid)
        p99 = query(base, "quantile(0.99, scrape_duration_seconds)") * 1000
        vm_cpu = vm_rss = 0.0
        if vm_proc is not None and isinstance(vm_cpu0, float):
            vm_cpu = (proc_cpu_seconds(vm_proc.pid) - vm_cpu0) / elapsed
            vm_rss = proc_rss_mib(vm_proc.pid)
    return Result(
        nodes=count,
        targets=2 * count,
        scrape_interval_s=args.scrape_interval,
        head_series=head,
        samples_per_s=samples,
        cpu_cores=cpu,
        rss_mib=rss,
        rss_kib_per_series=rss * 1024 / head if head else 0.0,
        scrape_duration_p99_ms=p99,
        remote_write=remote_write,
        remote_write_samples_per_s=sent,
        vm_cpu_cores=vm_cpu,
        vm_rss_mib=vm_rss,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", default="50,200,500", help="comma-separated node counts")
    parser.add_argument("--node-series", type=int, default=1000, help="series per node_exporter target")
    parser.add_argument("--exporter-series", type=int, default=220, help="series per job-exporter target")
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="seconds")
    parser.add_argument("--settle", type=float, default=45.0, help="seconds before measuring")
    parser.add_argument("--measure", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--remote-write", action="store_true", help="also remote_write to a local victoria-metrics")
    parser.add_argument("--output", type=Path, default=Path(".cache/bench_prometheus_scale.json"))
    args = parser.parse_args(argv)

    results: list[Result] = []
    modes = [False, True] if args.remote_write else [False]
    for count in (int(n) for n in args.nodes.split(",")):
        for remote in modes:
            result = run_one(args, count, remote)
            results.append(result)
            print(json.dumps(asdict(result)), flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")

    print()
    print(
        "| nodes | targets | head series | samples/s | Prometheus CPU (cores) | RSS MiB | KiB/series "
        "| scrape p99 ms | remote_write | VM CPU (cores) | VM RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.nodes} | {r.targets} | {r.head_series:.0f} | {r.samples_per_s:.0f} | {r.cpu_cores:.3f} "
            f"| {r.rss_mib:.0f} | {r.rss_kib_per_series:.2f} | {r.scrape_duration_p99_ms:.1f} "
            f"| {'yes' if r.remote_write else 'no'} | {r.vm_cpu_cores:.3f} | {r.vm_rss_mib:.0f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
