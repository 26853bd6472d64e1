"""The GPM sampler's window, in this process with a fake clock: the real ``pynvml`` on the simulated NVML library
(a stand-in for hardware), loaded by path before pynvml looks for ``libnvidia-ml.so.1`` by its soname."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from pai_monitoring.gpu.calls import CallCounter
from pai_monitoring.gpu.gpm import MIN_WINDOW_SECONDS, GpmSampler
from tests.integration.gpu.conftest import Scenario, gpus

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def nvml(scenario: Scenario, nvml_sim_lib: Path) -> Iterator[Scenario]:
    ctypes.CDLL(str(nvml_sim_lib / "libnvidia-ml.so.1"), mode=ctypes.RTLD_GLOBAL)
    scenario.write(gpus(1) + "gpu.0.gpm.supported = 1\ngpu.0.gpm.sm = 20\n")
    pynvml.nvmlInit()
    yield scenario
    pynvml.nvmlShutdown()


def sm(reading: object) -> float | None:
    return dict(reading.values).get("sm")  # type: ignore[attr-defined]


def test_a_collection_sooner_than_gpm_allows_serves_the_previous_window(nvml: Scenario) -> None:
    clock = Clock()
    sampler = GpmSampler(clock)
    call = CallCounter()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    try:
        assert sampler.read(call, 0, handle, False, ())[0].status == "first_sample"
        clock.now += 1.0
        nvml.append("gpu.0.gpm.sm = 40\n")
        assert sm(sampler.read(call, 0, handle, False, ())[0]) == pytest.approx(30)
        samples_taken = call.calls
        nvml.append("gpu.0.gpm.sm = 100\n")
        clock.now += MIN_WINDOW_SECONDS / 2  # too soon for a new sample: the last window again, no NVML call
        assert sm(sampler.read(call, 0, handle, False, ())[0]) == pytest.approx(30)
        assert call.calls == samples_taken
        clock.now += MIN_WINDOW_SECONDS
        assert sm(sampler.read(call, 0, handle, False, ())[0]) == pytest.approx(70)  # from the sample at 40 %
    finally:
        sampler.close()


def test_samples_of_gpus_no_longer_seen_are_freed(nvml: Scenario) -> None:
    clock = Clock()
    sampler = GpmSampler(clock)
    call = CallCounter()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    sampler.read(call, 0, handle, False, ())
    sampler.end_cycle()
    assert sampler.held() == 1
    sampler.end_cycle()  # a collection that did not see the GPU
    assert sampler.held() == 0
    clock.now += 1.0
    assert sampler.read(call, 0, handle, False, ())[0].status == "first_sample"
    sampler.close()
    assert sampler.held() == 0
