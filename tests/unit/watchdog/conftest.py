"""Fixtures for the watchdog tests: the Kubernetes API stand-in and collectors pointed at it.

The stand-in (``sim/kube_apiserver``) is a local HTTP server that speaks the API server's protocol; the collector
under test uses the real ``kubernetes`` client against it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "sim") not in sys.path:
    sys.path.insert(0, str(REPO / "sim"))

from kube_apiserver import ClusterState, KubeApiStandIn  # noqa: E402
from pai_monitoring.runtime.collector import CollectorContext  # noqa: E402
from pai_monitoring.watchdog.collector import KubernetesCollector  # noqa: E402
from pai_monitoring.watchdog.options import KubernetesOptions  # noqa: E402

TOKEN = "watchdog-test-token"


@pytest.fixture
def cluster() -> ClusterState:
    state = ClusterState()
    state.set_token(TOKEN)
    return state


@pytest.fixture
def apiserver(cluster: ClusterState) -> Iterator[KubeApiStandIn]:
    with KubeApiStandIn(cluster) as server:
        yield server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return path


MakeCollector = Callable[..., KubernetesCollector]


@pytest.fixture
def make_collector(apiserver: KubeApiStandIn, token_file: Path) -> Iterator[MakeCollector]:
    """Build collectors against the stand-in; options default to a short request timeout and small pages.

    These collectors list every collection (``watch=False``): each collection then shows the API server's state
    of that moment. The watch cache has its own tests (``test_informer.py``, ``test_watch_collector.py``).
    """
    made: list[KubernetesCollector] = []

    def make(**overrides: Any) -> KubernetesCollector:
        values: dict[str, Any] = {
            "api_url": apiserver.url,
            "token_file": token_file,
            "request_timeout": 2.0,
            "page_size": 3,
            "watch": False,
            **overrides,
        }
        options = KubernetesOptions(**values)
        options.validate()
        collector = KubernetesCollector(options, CollectorContext(node_name="control"))
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()
