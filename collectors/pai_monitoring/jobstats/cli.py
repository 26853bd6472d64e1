"""``pai-jobstats JOB``: what a job used of what it held, read from Prometheus.

Exit status: 0 with a report; 2 for bad arguments, a job Prometheus does not know, or a Prometheus that cannot be
reached; 1 when Prometheus answers with an error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence

from pai_monitoring.jobstats import render
from pai_monitoring.jobstats.prometheus import (
    DEFAULT_TIMEOUT_SECONDS,
    Prometheus,
    PrometheusError,
    PrometheusUnreachable,
)
from pai_monitoring.jobstats.report import UnknownJob, find, gather

DEFAULT_URL = "http://localhost:9090"
URL_VARIABLE = "PAI_PROMETHEUS_URL"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)([smhdw])")


def seconds(text: str) -> float:
    """A Prometheus duration (``90s``, ``1h30m``, ``7d``) in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration like 90s, 1h30m or 7d: {text!r}")
    total = sum(int(n) * UNITS[u] for n, u in parts)
    if total <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than nothing: {text!r}")
    return float(total)


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="pai-jobstats",
        description="How a job used the GPUs, CPUs and memory it held: GPUs held against used, SM and tensor-core "
        "activity, GPU memory peaks, CPU use, host memory against the limit, energy, and hints. Reads Prometheus.",
    )
    cli.add_argument("job", help="a PAI job name, a Kubernetes pod (POD or NAMESPACE/POD) or a Slurm job id")
    cli.add_argument(
        "--prometheus",
        default=os.environ.get(URL_VARIABLE, DEFAULT_URL),
        help=f"Prometheus's URL (default ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    cli.add_argument("--json", action="store_true", help="print JSON (base units: ratios, bytes, joules)")
    cli.add_argument("--lookback", default="7d", help="how far back to look for the job (default 7d)")
    cli.add_argument("--step", default="60s", help="resolution of peaks and of the job's start and end (default 60s)")
    cli.add_argument("--cpus", type=positive, help="CPU cores the job was given, for its CPU efficiency")
    cli.add_argument(
        "--timeout", type=positive, default=DEFAULT_TIMEOUT_SECONDS, help="seconds to wait for each query (default 10)"
    )
    return cli


def fail(message: str, status: int) -> int:
    sys.stderr.write(f"pai-jobstats: {message}\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    try:
        lookback_s, step_s = seconds(args.lookback), seconds(args.step)
        prom = Prometheus(args.prometheus, timeout=args.timeout)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        cli.print_usage(sys.stderr)
        return fail(str(exc), 2)
    if step_s > lookback_s:
        return fail(f"--step {args.step} is longer than --lookback {args.lookback}", 2)
    try:
        job = find(prom, args.job, time.time(), args.lookback, args.step)
        report = gather(prom, job, args.step, step_s, args.cpus)
    except UnknownJob:
        return fail(
            f"Prometheus at {prom.url} has no job, pod or Slurm job {args.job!r} in the last {args.lookback} "
            "(task_info has no series for it; check the name, or look further back with --lookback)",
            2,
        )
    except PrometheusUnreachable as exc:
        return fail(str(exc), 2)
    except PrometheusError as exc:
        return fail(str(exc), 1)
    sys.stdout.write(render.as_json(report) if args.json else render.text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
