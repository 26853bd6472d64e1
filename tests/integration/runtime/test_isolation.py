"""A collector that hangs or raises never takes the endpoint or the other collectors down (real process, real HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter import Exporter, get, start_exporter, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def hanging_exporter(tmp_path: Path) -> Iterator[tuple[Exporter, Path]]:
    marker = tmp_path / "hanging"
    exporter = start_exporter(
        [
            "--no-collector.node_health",
            "--collector.steady",
            "--collector.steady.interval=0.2",
            "--collector.hang",
            "--collector.hang.interval=0.2",
            "--collector.hang.timeout=0.5",
            "--collector.hang.expiry=1.5",
            "--collector.hang.hang-after=1",
            f"--collector.hang.marker={marker}",
        ]
    )
    yield exporter, marker
    exporter.stop()


def test_hanging_collector_does_not_block_scrapes_and_expires(hanging_exporter: tuple[Exporter, Path]) -> None:
    exporter, marker = hanging_exporter
    wait_for(marker.exists)  # the collector is now blocked for good inside collect()

    started = time.monotonic()
    status, body = get(f"{exporter.url}/metrics")
    latency = time.monotonic() - started
    print(f"scrape latency while a collector hangs: {latency * 1000:.1f} ms")  # figures go to bench/, not asserts
    assert status == 200
    assert "pai_test_steady 1.0" in body

    def hang_expired() -> bool:
        _, text = get(f"{exporter.url}/metrics")
        return "pai_test_hang " not in text and 'pai_scrape_collector_success{collector="hang"} 0.0' in text

    wait_for(hang_expired)
    _, body = get(f"{exporter.url}/metrics")
    assert 'pai_scrape_collector_success{collector="steady"} 1.0' in body
    assert "pai_test_steady 1.0" in body
    # the hung collector's iteration counter has stopped: the JobExporterHangs alert can see it
    first = body.count('collector_iteration_count_total{name="hang"} 2.0')
    time.sleep(1.0)
    _, later = get(f"{exporter.url}/metrics")
    assert first == 1
    assert 'collector_iteration_count_total{name="hang"} 2.0' in later


def test_hang_does_not_pile_up_threads(hanging_exporter: tuple[Exporter, Path]) -> None:
    exporter, marker = hanging_exporter
    wait_for(marker.exists)
    task_dir = Path(f"/proc/{exporter.process.pid}/task")
    before = len(list(task_dir.iterdir()))
    time.sleep(2.0)  # ten more intervals of the hung collector
    after = len(list(task_dir.iterdir()))
    assert after <= before


def test_raising_collector_leaves_the_others_served() -> None:
    exporter = start_exporter(
        ["--collector.boom", "--collector.boom.interval=0.2", "--collector.steady", "--collector.steady.interval=0.2"]
    )
    try:

        def both_ran() -> bool:
            _, text = get(f"{exporter.url}/metrics")
            return 'collector_iteration_count_total{name="boom"} 2.0' in text and "pai_test_steady 1.0" in text

        wait_for(both_ran)
        status, body = get(f"{exporter.url}/metrics")
        assert status == 200
        assert 'pai_scrape_collector_success{collector="boom"} 0.0' in body
        assert 'pai_scrape_collector_success{collector="steady"} 1.0' in body
        assert 'pai_scrape_collector_success{collector="node_health"} 1.0' in body
        assert "zombie_process_count" in body
        assert get(f"{exporter.url}/healthz")[0] == 200
        status, page = get(f"{exporter.url}/")
        assert status == 200
        assert "simulated collector fault" in page
    finally:
        assert exporter.stop() == 0  # SIGTERM: clean exit
