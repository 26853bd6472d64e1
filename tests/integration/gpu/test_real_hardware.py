"""On a host with a real NVIDIA GPU and driver: the collector reads it through NVML and the minor numbers match the
device files. Run by hand there (``pytest -m gpu_hardware``); CI has no GPU and never selects this marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_monitoring.shared_model import GPU_STATE
from tests.integration.gpu.conftest import NODE, MakeCollector, collect_paced, samples, series, value

pytestmark = pytest.mark.gpu_hardware


def test_real_gpus_are_reported_with_their_device_minor_numbers(make_collector: MakeCollector) -> None:
    collector = make_collector(timeout=30.0)
    found = samples(collector.collect())
    assert value(found, "pai_gpu_nvml_status", status="ok", **NODE) == 1
    minors = {s["minor_number"] for s in series(found, "pai_gpu_info")}
    assert minors
    for minor in minors:
        assert Path(f"/dev/nvidia{minor}").exists()
    for gpu in series(found, "pai_gpu_memory_total_bytes"):
        total = value(found, "pai_gpu_memory_total_bytes", **gpu)
        used = value(found, "pai_gpu_memory_used_bytes", **gpu)
        reserved = value(found, "pai_gpu_memory_reserved_bytes", **gpu) or 0.0
        assert total is not None
        assert used is not None
        assert used + reserved <= total, gpu
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    for device in state.devices:
        assert device.uuid.startswith("GPU-")
        assert state.device_by_id(device.uuid) is device


def test_profiling_series_are_there_exactly_where_the_gpu_has_gpm(make_collector: MakeCollector) -> None:
    collector = make_collector(timeout=30.0)
    collect_paced(collector)  # the first of GPM's two samples
    found = samples(collect_paced(collector))
    statuses = {
        (s["index"], s["gpu_instance_id"]): s["status"]
        for s in series(found, "pai_gpu_profiling_status")
        if value(found, "pai_gpu_profiling_status", **s) == 1
    }
    assert statuses, "every GPU NVML answers for has a profiling status"
    assert set(statuses.values()) <= {"ok", "mig_mode", "unsupported_gpu", "unsupported_driver"}
    for name in ("pai_gpu_sm_active_ratio", "pai_gpu_sm_occupancy_ratio", "pai_gpu_pipe_active_ratio"):
        for labels in series(found, name):
            assert statuses[(labels["index"], labels["gpu_instance_id"])] == "ok", labels
            ratio = value(found, name, **labels)
            assert ratio is not None
            assert 0.0 <= ratio <= 1.0, (name, labels)
    profiled = {key for key, status in statuses.items() if status == "ok"}
    assert profiled == {(s["index"], s["gpu_instance_id"]) for s in series(found, "pai_gpu_sm_active_ratio")}
