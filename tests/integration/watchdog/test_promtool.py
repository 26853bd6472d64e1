"""promtool accepts the watchdog's full exposition (histograms included), apart from the original "_count" names."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kube_apiserver import ClusterState, KubeApiStandIn
from tests.unit.watchdog.conftest import MakeCollector
from tests.unit.watchdog.test_exposition import SCENARIO, _Fixed

pytestmark = pytest.mark.integration

PROMTOOL_TIMEOUT_SECONDS = 60
# Names the original watchdog used, kept on purpose; promtool's lint dislikes their "_count" suffix (and a gauge's
# "_total" suffix).
KEPT_ORIGINAL_NAMES = ("pai_pod_count", "pai_job_pod_count", "pai_container_count", "pai_node_count",
                       "k8s_api_server_count", "k8s_node_gpu_total")  # fmt: skip


def test_promtool_finds_nothing_but_the_kept_original_names(
    cluster: ClusterState, apiserver: KubeApiStandIn, make_collector: MakeCollector
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package")
    cluster.load_scenario(SCENARIO)
    collector = make_collector()
    collector.collect()
    families = list(collector.collect())
    registry = CollectorRegistry(auto_describe=False)
    fixed = _Fixed(families)
    fixed.families = families  # histograms too
    registry.register(fixed)
    text = generate_latest(registry).decode()
    assert "k8s_api_list_pods_latency_seconds_bucket" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    unexpected = [line for line in findings if not line.startswith(KEPT_ORIGINAL_NAMES)]
    assert unexpected == []
