"""Console entry points."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pai_monitoring import registry
from pai_monitoring.runtime.daemon import main

JOB_EXPORTER_PORT = 9102
WATCHDOG_PORT = 9101


def job_exporter_main(argv: Sequence[str] | None = None) -> int:
    """``pai-job-exporter``: GPU, job and node-health metrics of one node."""
    return main("pai-job-exporter", JOB_EXPORTER_PORT, registry.JOB_EXPORTER, argv)


def watchdog_main(argv: Sequence[str] | None = None) -> int:
    """``pai-watchdog``: Kubernetes cluster health, from a control host."""
    return main("pai-watchdog", WATCHDOG_PORT, registry.WATCHDOG, argv)


if __name__ == "__main__":
    sys.exit(job_exporter_main())
