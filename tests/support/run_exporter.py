"""Runs ``pai-job-exporter`` with the test collectors added to its registry (a real process, real HTTP).

Usage: python -m tests.support.run_exporter [exporter flags...]; the test collectors start disabled
unless enabled with --collector.<name>.
"""

from __future__ import annotations

import sys

from pai_monitoring import registry
from pai_monitoring.cli import job_exporter_main
from tests.support.test_collectors import TEST_COLLECTORS

if __name__ == "__main__":
    registry.JOB_EXPORTER.update(TEST_COLLECTORS)
    for cls_name in TEST_COLLECTORS:
        registry.load(TEST_COLLECTORS[cls_name]).default_enabled = False
    sys.exit(job_exporter_main(sys.argv[1:]))
