"""TLS to the API server: verified by default, against the CA given; skipping verification is explicit."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from kube_apiserver import ClusterState, KubeApiStandIn
from tests.integration.watchdog.conftest import Tls
from tests.unit.watchdog.conftest import TOKEN, MakeCollector
from tests.unit.watchdog.helpers import Scrape

pytestmark = pytest.mark.integration


@pytest.fixture
def https_apiserver(cluster: ClusterState, tls: Tls) -> Iterator[KubeApiStandIn]:
    cluster.load_scenario({"token": TOKEN, "nodes": [{"name": "n1", "ip": "10.0.0.1", "gpus": 8}]})
    with KubeApiStandIn(cluster, tls_cert=tls.cert, tls_key=tls.key) as server:
        yield server


def test_verified_with_the_given_ca(https_apiserver: KubeApiStandIn, make_collector: MakeCollector, tls: Tls) -> None:
    result = Scrape(make_collector(api_url=https_apiserver.url, ca_file=tls.cert).collect())
    assert result.api_error() == "ok"
    assert result.value("k8s_node_gpu_total", host_ip="10.0.0.1") == 8


def test_unknown_ca_is_refused(https_apiserver: KubeApiStandIn, make_collector: MakeCollector) -> None:
    result = Scrape(make_collector(api_url=https_apiserver.url).collect())
    assert result.api_error() == "tls_error"
    assert result.find("pai_node_count") == []


def test_skipping_verification_works_and_warns(
    https_apiserver: KubeApiStandIn, make_collector: MakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        collector = make_collector(api_url=https_apiserver.url, insecure_skip_tls_verify=True)
    assert any("TLS verification of the API server is off" in r.getMessage() for r in caplog.records)
    assert Scrape(collector.collect()).api_error() == "ok"


def test_wrong_host_name_is_refused(cluster: ClusterState, make_collector: MakeCollector, tls: Tls) -> None:
    cluster.load_scenario({"token": TOKEN})
    # the certificate names 127.0.0.1 only; "localhost" reaches the same server under another name
    with KubeApiStandIn(cluster, tls_cert=tls.cert, tls_key=tls.key) as server:
        result = Scrape(make_collector(api_url=f"https://localhost:{server.port}", ca_file=tls.cert).collect())
    assert result.api_error() == "tls_error"
