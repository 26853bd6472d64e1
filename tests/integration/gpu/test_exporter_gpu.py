"""The GPU collector inside a real ``pai-job-exporter`` process, on the simulated NVML library (a stand-in for GPUs).

A hung driver call must not hang the exporter: scrapes keep answering, the GPU series expire, success goes to 0,
and collection recovers once the driver answers again.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from tests.integration.gpu.conftest import Scenario, gpus
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


def test_a_hung_driver_never_hangs_the_exporter(exporter: Exporter, scenario: Scenario) -> None:
    wait_for(lambda: SUCCESS + "1.0" in scrape(exporter) and "nvidiasmi_attached_gpus 4.0" in scrape(exporter))
    scenario.append("gpu.3.block.nvmlDeviceGetTemperature = 120\n")

    wait_for(lambda: SUCCESS + "0.0" in scrape(exporter) and "nvidiasmi_attached_gpus" not in scrape(exporter))
    body = scrape(exporter)
    assert 'collector_iteration_count_total{name="gpu"}' in body
    workers = psutil.Process(exporter.process.pid).children(recursive=True)
    assert len(workers) <= 1

    scenario.write(gpus(4))
    wait_for(lambda: SUCCESS + "1.0" in scrape(exporter))
    body = scrape(exporter)
    assert "nvidiasmi_attached_gpus 4.0" in body
    assert 'nvidiasmi_ecc_error_count{minor_number="3",node_name="gpu-e2e-node",type="double"} 0.0' in body
    restarts = [line for line in body.splitlines() if line.startswith("pai_gpu_worker_restarts_total ")]
    assert restarts
    assert float(restarts[0].split()[1]) >= 1
