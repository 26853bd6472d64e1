"""Runs ``pai-job-exporter`` with the test collectors added to its table (a real process, real HTTP).

Usage: python -m tests.support.run_exporter [exporter flags...]; the test collectors start disabled
unless enabled with --collector.<name>.
"""

from __future__ import annotations

import sys

from pai_monitoring.cli import JOB_EXPORTER_PORT
from pai_monitoring.registry import JOB_EXPORTER
from pai_monitoring.runtime.daemon import main
from tests.support.test_collectors import TEST_COLLECTORS

if __name__ == "__main__":
    sys.exit(main("pai-job-exporter", JOB_EXPORTER_PORT, {**JOB_EXPORTER, **TEST_COLLECTORS}, sys.argv[1:]))
