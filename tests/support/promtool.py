"""``promtool check metrics`` on an exposition, less its complaints about names kept from the original system.

promtool's lint dislikes a ``_count`` suffix on a gauge (and ``_total`` on a gauge); dashboards and alert rules
query the original OpenPAI names exactly as they were, so these are kept on purpose and only these are allowed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

KEPT_ORIGINAL_NAMES = (
    # job-exporter
    "zombie_process_count",
    "configured_gpu_count",
    "nvidiasmi_ecc_error_count",
    "nvidiasmi_memory_leak_count",
    "gpu_used_by_external_process_count",
    "gpu_used_by_zombie_container_count",
    "docker_daemon_count",
    "zombie_container_count",
    # watchdog
    "pai_pod_count",
    "pai_job_pod_count",
    "pai_container_count",
    "pai_node_count",
    "k8s_api_server_count",
    "k8s_node_gpu_total",
)
PROMTOOL_TIMEOUT_SECONDS = 60


def promtool_findings(text: str) -> list[str]:
    """Every finding of ``promtool check metrics`` that is not about a kept original name."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    kept = tuple(f"{name} " for name in KEPT_ORIGINAL_NAMES)
    return [line for line in findings if not line.startswith(kept)]
