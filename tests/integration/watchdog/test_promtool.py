"""promtool accepts the watchdog's full exposition (histograms included), apart from the original "_count" names."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kube_apiserver import ClusterState, KubeApiStandIn
from tests.support.promtool import promtool_findings
from tests.unit.watchdog.conftest import MakeCollector
from tests.unit.watchdog.test_exposition import SCENARIO, _Fixed

pytestmark = pytest.mark.integration


def test_promtool_finds_nothing_but_the_kept_original_names(
    cluster: ClusterState, apiserver: KubeApiStandIn, make_collector: MakeCollector
) -> None:
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
    assert promtool_findings(text) == []
