"""The GPU collector inside a real ``pai-job-exporter`` process, on the simulated NVML library (a stand-in for GPUs).

A hung driver call must not hang the exporter: scrapes keep answering, the GPU series go, the collector's own health
series (NVML status, worker restarts, timeouts, last success) stay, and collection recovers once the driver answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from tests.integration.gpu.conftest import Scenario, gpus, uuid_of
from tests.support.exporter import Exporter, get, start_exporter, wait_for

pytestmark = pytest.mark.integration

SUCCESS = 'pai_scrape_collector_success{collector="gpu"} '


@pytest.fixture
def exporter(scenario: Scenario) -> Iterator[Exporter]:
    scenario.write(gpus(4))
    exporter = start_exporter(
        [
            "--node-name=gpu-e2e-node",
            "--collector.gpu",
            "--collector.gpu.interval=0.5",
            "--collector.gpu.timeout=2",
            "--collector.gpu.expiry=3",
        ]
    )
    yield exporter
    exporter.stop()


def scrape(exporter: Exporter) -> str:
    status, body = get(f"{exporter.url}/metrics")
    assert status == 200
    return body


def number(body: str, series: str) -> float | None:
    """The value of one exact series line in an exposition, ``None`` when absent."""
    for line in body.splitlines():
        name, _, rest = line.partition(" ")
        if name == series:
            return float(rest)
    return None


NODE = 'node_name="gpu-e2e-node"'
TIMEOUT = f'pai_gpu_nvml_status{{{NODE},status="timeout"}}'
TIMEOUTS = f"pai_gpu_nvml_timeouts_total{{{NODE}}}"
RESTARTS = f"pai_gpu_worker_restarts_total{{{NODE}}}"
LAST_SUCCESS = f"pai_gpu_nvml_last_success_timestamp_seconds{{{NODE}}}"


def test_a_hung_driver_never_hangs_the_exporter(exporter: Exporter, scenario: Scenario) -> None:
    wait_for(lambda: f"nvidiasmi_attached_gpus{{{NODE}}} 4.0" in scrape(exporter))
    scenario.append("gpu.3.block.nvmlDeviceGetTemperature = 120\n")

    # Hung for longer than the expiry: the GPU series are gone, the health series say why.
    wait_for(lambda: (number(scrape(exporter), TIMEOUTS) or 0) >= 3)
    body = scrape(exporter)
    assert "nvidiasmi_attached_gpus" not in body
    assert number(body, TIMEOUT) == 1
    assert (number(body, RESTARTS) or 0) >= 3
    assert number(body, LAST_SUCCESS) is not None
    assert number(body, SUCCESS.strip()) == 1  # the collector works; NVML does not, and says so
    assert 'collector_iteration_count_total{name="gpu"}' in body
    workers = psutil.Process(exporter.process.pid).children(recursive=True)
    assert len(workers) <= 1

    scenario.write(gpus(4))
    wait_for(lambda: f"nvidiasmi_attached_gpus{{{NODE}}} 4.0" in scrape(exporter))
    body = scrape(exporter)
    assert number(body, TIMEOUT) == 0
    labels = f'index="3",minor_number="3",{NODE},type="double",uuid="{uuid_of(3)}"'
    assert number(body, f"nvidiasmi_ecc_error_count{{{labels}}}") == 0
    assert (number(body, RESTARTS) or 0) >= 3
