"""Generates ``docs/metrics.md`` from the metric specs in the code (the one source of truth).

``python -m pai_monitoring.metrics_doc docs/metrics.md`` rewrites the file; ``--check`` exits 1 when it differs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from pai_monitoring import registry
from pai_monitoring.runtime.exposition import RUNTIME_METRICS
from pai_monitoring.runtime.metrics import MetricSpec

HEADER = """# Metrics

Generated from the code by `make docs` (`python -m pai_monitoring.metrics_doc docs/metrics.md`); do not edit by hand.
A test fails when this file and the code differ.

Names the original OpenPAI monitoring exported (`nvidiasmi_*`, `gpu_*`, `task_*`, `service_*`, `pai_*_count`,
`k8s_*`, ...) are kept as they were, labels included; new metrics use the `pai_` prefix, base units and `_total`
counters. Every series of a collector disappears when its snapshot expires (2 collection intervals by default).
"""


def all_specs() -> Iterator[tuple[str, str, MetricSpec]]:
    """(daemon, collector, spec) for every metric either daemon can emit."""
    for daemon in registry.DAEMONS:
        for spec in RUNTIME_METRICS:
            yield daemon, "runtime", spec
        for name, cls in registry.collector_classes(daemon).items():
            for spec in cls.metrics:
                yield daemon, name, spec


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    lines = [HEADER]
    for daemon in registry.DAEMONS:
        lines.append(f"\n## {daemon}\n")
        lines.append("| metric | type | labels | collector | meaning |")
        lines.append("|---|---|---|---|---|")
        for spec_daemon, collector, spec in all_specs():
            if spec_daemon != daemon:
                continue
            labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
            lines.append(f"| `{spec.name}` | {spec.type} | {labels} | {collector} | {_cell(spec.help)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
