"""The informer against the API stand-in: one list, then a watch that keeps the cache current through what a real
API server does to a watch (events, bookmarks, 410 Gone, dropped connections, silence, oversized events)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_apiserver import ClusterState, Fault, KubeApiStandIn, build_pod
from pai_monitoring.watchdog import errors
from pai_monitoring.watchdog.client import KubeApi
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.informer import Informer, WatchBounds, read_lines
from pai_monitoring.watchdog.options import KubernetesOptions
from tests.unit.watchdog.conftest import TOKEN

WAIT_S = 20.0
BOOKMARK_S = 0.05
BOUNDS = WatchBounds(timeout=60, idle_timeout=30, max_event_bytes=64 * 1024, max_objects=1000, backoff_initial=0.05)
# load_scenario gives n1 and n2 the versions 2 and 3, the pods p0, p1, p2 the versions 4, 5, 6
SCENARIO = {"token": TOKEN, "nodes": [{"name": "n1"}, {"name": "n2"}], "pods": [{"name": f"p{i}"} for i in range(3)]}


def wait_for(what: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds (the informer works in its own thread); fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT_S:g}s waiting for {what}")
        time.sleep(0.01)


def name_at_version(raw: dict[str, Any]) -> str:
    """What these tests keep per object, ``name@resourceVersion``, so that every change shows."""
    return f"{raw['metadata']['name']}@{raw['metadata']['resourceVersion']}"


def pod(name: str, **spec: Any) -> Any:
    return build_pod({"name": name, **spec})


@pytest.fixture
def apiserver(cluster: ClusterState) -> Iterator[KubeApiStandIn]:
    """The stand-in with bookmarks every 50 ms (the real server sends one about every minute)."""
    cluster.load_scenario(SCENARIO)
    with KubeApiStandIn(cluster, bookmark_interval=BOOKMARK_S) as server:
        yield server


@pytest.fixture
def api(apiserver: KubeApiStandIn, token_file: Path) -> Iterator[KubeApi]:
    options = KubernetesOptions(api_url=apiserver.url, token_file=token_file, request_timeout=2.0, page_size=2)
    kube = KubeApi(options)
    kube.refresh_token()
    yield kube
    kube.close()


MakeInformer = Callable[..., Informer[str]]


@pytest.fixture
def make_informer(api: KubeApi) -> Iterator[MakeInformer]:
    made: list[Informer[str]] = []

    def make(kind: str = "pods", *, synced: bool = True, **bounds: Any) -> Informer[str]:
        informer = Informer(api, kind, name_at_version, WatchBounds(**{**BOUNDS.__dict__, **bounds}), jitter=lambda: 0)
        made.append(informer)
        informer.start()
        if synced:
            assert informer.wait_synced(WAIT_S), informer.state()
        return informer

    yield make
    for informer in made:
        informer.stop()
        assert informer._thread is not None
        assert not informer._thread.is_alive(), "stop() left the informer thread running"


def cached(informer: Informer[str]) -> list[str]:
    return sorted(informer.values())


def requests(cluster: ClusterState, path: str = "/api/v1/pods") -> tuple[int, int]:
    """(list requests, watch requests) the stand-in received on ``path``."""
    queries = [query for p, query in cluster.requests() if p == path]
    watches = sum("watch=true" in q for q in queries)
    return len(queries) - watches, watches


def test_list_then_events_keep_the_cache_current(make_informer: MakeInformer, cluster: ClusterState) -> None:
    cluster.clear_requests()
    informer = make_informer()
    assert cached(informer) == ["p0@4", "p1@5", "p2@6"]

    cluster.upsert("pods", pod("p9"))  # ADDED, version 7
    cluster.upsert("pods", pod("p0", phase="Failed"))  # MODIFIED, version 8
    cluster.delete("pods", "default/p1")  # DELETED, version 9
    wait_for("the three events", lambda: cached(informer) == ["p0@8", "p2@6", "p9@7"])

    state = informer.state()
    assert (state.relists, state.failure) == (1, None)
    assert requests(cluster) == (2, 1)  # two list pages (page size 2), then one watch and nothing more


def test_bookmarks_move_the_version_on_and_a_compacted_one_relists(
    make_informer: MakeInformer, cluster: ClusterState, apiserver: KubeApiStandIn
) -> None:
    informer = make_informer()
    for _ in range(5):  # node events only: nothing for the pods informer, the history moves on
        cluster.patch_node("n1", {"ready": False})
        cluster.patch_node("n1", {"ready": True})
    wait_for("a bookmark at the latest version", lambda: informer.state().resource_version == "16")
    assert cached(informer) == ["p0@4", "p1@5", "p2@6"]

    cluster.upsert("pods", pod("p3"))  # version 17
    cluster.compact()  # version 18: nothing before 18 can be watched any more
    apiserver.drop_watches()
    wait_for("the expired watch to be listed again", lambda: informer.state().relists == 2)
    wait_for("the relist", lambda: cached(informer) == ["p0@4", "p1@5", "p2@6", "p3@17"])


@pytest.mark.parametrize(("bookmark_interval", "relists"), [(BOOKMARK_S, 1), (3600.0, 2)], ids=["bookmarks", "none"])
def test_a_bookmarked_version_survives_a_short_history(
    token_file: Path, bookmark_interval: float, relists: int
) -> None:
    """Node events push the pods' last version out of a short history: resuming from a bookmark still works,
    resuming from the list's version gets 410 and lists everything again."""
    cluster = ClusterState(history=3)
    cluster.load_scenario(SCENARIO)
    with KubeApiStandIn(cluster, bookmark_interval=bookmark_interval) as server:
        options = KubernetesOptions(api_url=server.url, token_file=token_file, request_timeout=2.0)
        api = KubeApi(options)
        api.refresh_token()
        informer = Informer(api, "pods", name_at_version, BOUNDS, jitter=lambda: 0)
        informer.start()
        try:
            assert informer.wait_synced(WAIT_S)
            wait_for("the watch", lambda: informer.state().watches == 1)
            for ready in (False, True) * 4:  # versions 7-14; the history keeps 12-14
                cluster.patch_node("n1", {"ready": ready})
            if bookmark_interval == BOOKMARK_S:
                wait_for("a bookmark at version 14", lambda: informer.state().resource_version == "14")
            server.drop_watches()
            wait_for("the watch to reopen", lambda: informer.state().watches >= 2 and informer.state().failure is None)
            wait_for("the cache", lambda: informer.state().relists == relists and informer.state().synced)
            assert cached(informer) == ["p0@4", "p1@5", "p2@6"]
        finally:
            informer.stop()
            api.close()


def test_410_gone_relists_and_forgets_what_was_deleted_meanwhile(
    make_informer: MakeInformer, cluster: ClusterState, apiserver: KubeApiStandIn
) -> None:
    informer = make_informer()
    cluster.set_fault(Fault("down"))  # the watch is cut and the port closed
    wait_for("the outage", lambda: informer.state().failure is not None)
    cluster.delete("pods", "default/p0")  # while it cannot watch: version 7
    cluster.upsert("pods", pod("p7"))  # version 8
    cluster.compact()  # version 9: the deletion is no longer in any history
    cluster.set_fault(Fault())
    informer.retry_now(WAIT_S)
    wait_for("the relist after 410", lambda: cached(informer) == ["p1@5", "p2@6", "p7@8"])
    state = informer.state()
    assert state.relists == 2
    assert state.failure is None


def test_410_as_an_http_status_also_relists(
    make_informer: MakeInformer, cluster: ClusterState, apiserver: KubeApiStandIn
) -> None:
    informer = make_informer()
    cluster.set_fault(Fault("error", code=410, paths=("/api/v1/pods",)))
    apiserver.drop_watches()
    wait_for("the 410", lambda: getattr(informer.state().failure, "reason", "") == "http_410")
    cluster.set_fault(Fault())
    informer.retry_now(WAIT_S)
    wait_for("a relist", lambda: informer.state().relists >= 2 and informer.state().failure is None)


def test_dropped_connection_reconnects_with_growing_backoff_and_resumes(
    make_informer: MakeInformer, cluster: ClusterState, apiserver: KubeApiStandIn
) -> None:
    informer = make_informer()
    cluster.clear_requests()
    cluster.set_fault(Fault("down"))
    wait_for("four failed reconnections", lambda: len(informer.delays) >= 4)
    failure = informer.state().failure
    assert failure is not None
    assert failure.reason == errors.CONNECTION_REFUSED
    assert informer.delays[:4] == [0.05, 0.1, 0.2, 0.4]  # doubling from backoff_initial (jitter 0 here)

    cluster.upsert("pods", pod("p5"))  # made while the watch is down: version 7
    cluster.set_fault(Fault())
    wait_for("the reconnection", lambda: cached(informer) == ["p0@4", "p1@5", "p2@6", "p5@7"])
    assert informer.state().relists == 1  # the event came from the history: no list was needed
    assert informer.state().failure is None
    assert requests(cluster)[0] == 0


def test_backoff_is_bounded(make_informer: MakeInformer, cluster: ClusterState) -> None:
    informer = make_informer(backoff_initial=0.01, backoff_max=0.04)
    cluster.set_fault(Fault("down"))
    wait_for("six failed reconnections", lambda: len(informer.delays) >= 6)
    assert informer.delays[:6] == [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]


def test_a_silent_stream_is_reopened_without_a_relist(token_file: Path, cluster: ClusterState) -> None:
    """No event and no bookmark for ``idle_timeout``: the stream is taken for dead and opened again where it was."""
    cluster.load_scenario(SCENARIO)
    with KubeApiStandIn(cluster, bookmark_interval=3600) as server:
        api = KubeApi(KubernetesOptions(api_url=server.url, token_file=token_file, request_timeout=2.0))
        api.refresh_token()
        informer = Informer(api, "pods", name_at_version, WatchBounds(**{**BOUNDS.__dict__, "idle_timeout": 1.5}))
        informer.start()
        try:
            assert informer.wait_synced(WAIT_S)
            wait_for("three watch requests", lambda: informer.state().watches >= 3)
            assert informer.state().relists == 1
            assert informer.delays == []  # reopened at once: silence is not a failure to back off from
            cluster.upsert("pods", pod("p4"))
            wait_for("the event on a reopened watch", lambda: "p4@7" in cached(informer))
        finally:
            informer.stop()
            api.close()


def test_oversized_event_is_refused_and_the_cache_listed_again(
    make_informer: MakeInformer, cluster: ClusterState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pai_monitoring.watchdog")
    informer = make_informer(max_event_bytes=4096)
    big = pod("big", containers=[{"name": f"container-{i}"} for i in range(40)])  # about 20 kB of JSON
    cluster.upsert("pods", big)
    wait_for("the refusal and a relist", lambda: informer.state().relists >= 2)
    assert "big@7" in cached(informer)  # the list brings it in: lists are bounded per response, not per item
    refusals = [r.getMessage() for r in caplog.records if "error=malformed_response" in r.getMessage()]
    assert refusals
    assert "relist=true" in refusals[0]
    assert "more than 4096 bytes" in refusals[0] or "over 4096" in refusals[0]


def test_cache_is_bounded(make_informer: MakeInformer) -> None:
    informer = make_informer(synced=False, max_objects=2)
    wait_for("the failure", lambda: informer.state().failure is not None)
    failure = informer.state().failure
    assert failure is not None
    assert failure.reason == errors.TOO_MANY_OBJECTS
    assert "cache-max-objects" in failure.detail
    assert informer.state().objects <= 2
    assert not informer.state().synced


class Chunks:
    """A response body delivered in the given pieces (``read1`` semantics: what has arrived, b"" at the end)."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)

    def read1(self, size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


def lines(*pieces: bytes, cap: int = 100) -> list[bytes]:
    return list(read_lines(Chunks(*pieces), "pods", cap, float("inf"), time.monotonic))


def test_lines_are_split_across_reads() -> None:
    assert lines(b'{"a":', b'1}\n{"b"', b":2}\n\n", b'{"c":3}\n') == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_a_line_without_end_is_refused_once_over_the_cap() -> None:
    pieces = [b"x" * 60] * 1000  # a peer that never sends a newline: refused after 100 bytes, not 60,000
    with pytest.raises(ApiFailure, match="more than 100 bytes") as raised:
        lines(*pieces)
    assert raised.value.reason == errors.MALFORMED


def test_a_complete_line_over_the_cap_is_refused() -> None:
    with pytest.raises(ApiFailure, match="of 150 bytes"):
        lines(b"y" * 150 + b"\n")


def test_a_stream_ending_inside_an_event_is_malformed() -> None:
    with pytest.raises(ApiFailure, match="ended inside an event"):
        lines(b'{"type":"ADDED"\n{"type":')


class Streamed:
    """A urllib3 1.26 response: no ``read1``, chunks from ``stream``."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces

    def stream(self, size: int) -> Iterator[bytes]:
        yield from self.pieces


def test_lines_from_a_response_without_read1() -> None:
    found = list(read_lines(Streamed(b'{"a":1}\n{"b"', b":2}\n"), "pods", 100, float("inf"), time.monotonic))
    assert found == [b'{"a":1}', b'{"b":2}']


class EndlessEmptyList:
    """A peer whose list never ends: every page is empty and has a continue token."""

    pages = 0

    def list_pages_versioned(self, kind: str) -> Iterator[tuple[list[dict[str, Any]], str]]:
        while True:
            self.pages += 1
            yield [], "1"

    def open_watch(self, kind: str, resource_version: str, timeout_seconds: int, idle_timeout: float) -> Any:
        raise AssertionError("no watch before a list")


def test_a_list_that_never_ends_is_refused() -> None:
    api = EndlessEmptyList()
    informer = Informer(api, "pods", name_at_version, WatchBounds(**{**BOUNDS.__dict__, "backoff_initial": 60}))
    informer.start()
    try:
        wait_for("the refusal", lambda: informer.state().failure is not None)
        failure = informer.state().failure
        assert failure is not None
        assert failure.reason == errors.MALFORMED
        assert "101 empty list pages" in failure.detail
        assert api.pages == 101
    finally:
        informer.stop()
