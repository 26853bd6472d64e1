"""Turning a worker snapshot into metric families: original names and labels plus the GPU's identity, base units,
absent when unknown, and the collector's health on every collection."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from pai_monitoring.gpu.collector import DEFAULT_MEMORY_LEAK_THRESHOLD_BYTES, gpu_state
from pai_monitoring.gpu.families import BuildInput, Health, gpu_families, health_families, throttle_label
from pai_monitoring.gpu.metrics import GPU_SPECS, HEALTH_SPECS, IDENTITY
from pai_monitoring.gpu.model import DeviceReading, MigReading, ProcessReading, Snapshot, XidCount

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


GIB = 1 << 30
HEALTHY = DeviceReading(
    index=0,
    minor_number=2,
    uuid="GPU-aaaa",
    pci_bus_id="00000000:07:00.0",
    name="NVIDIA A100-SXM4-80GB",
    utilization_gpu_percent=87,
    memory_total_bytes=80 * GIB,
    memory_used_bytes=20 * GIB,
    temperature_celsius=61,
    power_milliwatts=250_500,
    power_limit_milliwatts=400_000,
    energy_millijoules=5_000_000,
    sm_clock_mhz=1410,
    memory_clock_mhz=1593,
    fan_percent=45,
    pcie_replay_count=3,
    ecc_corrected_volatile=5,
    ecc_uncorrected_volatile=1,
    retired_pages_single_bit=2,
    retired_pages_double_bit=0,
    retired_pages_pending=True,
    remapped_rows_correctable=1,
    remapped_rows_uncorrectable=0,
    remapped_rows_pending=False,
    remapped_rows_failure=False,
    clock_event_reasons=0x1 | 0x40,
    performance_state=2,
    mig_mode=False,
    processes=(ProcessReading(pid=4242, used_memory_bytes=20 * GIB),),
)
EXTRA = BuildInput(node_name="node-a", memory_leak_threshold_bytes=20 << 20, xids=())
A = {"node_name": "node-a", "index": "0", "uuid": "GPU-aaaa", "minor_number": "2"}
"""The identity labels of HEALTHY."""


def build(*devices: DeviceReading, extra: BuildInput = EXTRA) -> Samples:
    snapshot = Snapshot(status="ok", driver_version="550.54.15", cuda_version="12.4", devices=devices)
    return samples(gpu_families(snapshot, extra))


def health(**changes: object) -> Health:
    fields: dict[str, object] = {
        "node_name": "node-a",
        "status": "ok",
        "required": False,
        "configured_gpu_count": None,
        "worker_restarts": 0,
        "nvml_timeouts": 0,
        "last_success": None,
    }
    return Health(**{**fields, **changes})  # type: ignore[arg-type]


def test_original_families_keep_their_names_labels_and_percent_scale() -> None:
    found = build(HEALTHY)
    assert value(found, "nvidiasmi_utilization_gpu", **A) == 87
    assert value(found, "nvidiasmi_utilization_memory", **A) == 25.0
    assert value(found, "gpu_utilization", vender="nvidia", **A) == 87
    assert value(found, "gpu_mem_utilization", vender="nvidia", **A) == 25.0
    assert value(found, "nvidiasmi_temperature", **A) == 61
    assert value(found, "nvidiasmi_ecc_error_count", type="single", **A) == 5
    assert value(found, "nvidiasmi_ecc_error_count", type="double", **A) == 1
    reasons = "clocks_throttle_reason_gpu_idle,clocks_throttle_reason_hw_thermal_slowdown"
    assert value(found, "nvidiasmi_performance_state", clocks_throttle_reasons=reasons, **A) == 2
    assert value(found, "nvidiasmi_attached_gpus", node_name="node-a") == 1


def test_every_per_gpu_series_names_the_node_index_and_uuid() -> None:
    """What an alert needs to name the GPU for `nvidia-smi -i` and to cordon the node, on every GPU series."""
    found = build(HEALTHY, DeviceReading(index=1, lost=True, minor_number=5, uuid="GPU-lost"))
    per_gpu = [dict(labels) for name, labels in found if name != "nvidiasmi_attached_gpus"]
    assert per_gpu
    for labels in per_gpu:
        assert labels["node_name"] == "node-a", labels
        assert (labels["index"], labels["uuid"]) in {("0", "GPU-aaaa"), ("1", "GPU-lost")}, labels
    assert all(set(IDENTITY) <= set(spec.labels) for spec in GPU_SPECS if spec.name != "nvidiasmi_attached_gpus")
    assert all("node_name" in spec.labels for spec in HEALTH_SPECS)


def test_new_families_use_base_units() -> None:
    found = build(HEALTHY)
    assert value(found, "pai_gpu_power_watts", **A) == 250.5
    assert value(found, "pai_gpu_power_limit_watts", **A) == 400.0
    assert value(found, "pai_gpu_energy_joules_total", **A) == 5000.0
    assert value(found, "pai_gpu_sm_clock_hertz", **A) == 1.41e9
    assert value(found, "pai_gpu_fan_speed_ratio", **A) == 0.45
    assert value(found, "pai_gpu_memory_used_bytes", **A) == 20 * GIB
    assert value(found, "pai_gpu_memory_total_bytes", **A) == 80 * GIB
    assert value(found, "pai_gpu_process_memory_bytes", pid="4242", **A) == 20 * GIB
    assert value(found, "pai_gpu_clock_event_active", reason="hw_thermal_slowdown", **A) == 1
    assert value(found, "pai_gpu_clock_event_active", reason="sw_power_cap", **A) == 0
    assert value(found, "pai_gpu_retired_pages_pending", **A) == 1
    info = {
        **A,
        "pci_bus_id": "00000000:07:00.0",
        "model": "NVIDIA A100-SXM4-80GB",
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
    }
    assert value(found, "pai_gpu_info", **info) == 1


def test_memory_leak_needs_memory_in_use_and_no_process() -> None:
    idle_but_full = DeviceReading(index=1, minor_number=1, memory_total_bytes=GIB, memory_used_bytes=512 << 20)
    idle_and_empty = DeviceReading(index=2, minor_number=3, memory_total_bytes=GIB, memory_used_bytes=1 << 20)
    found = build(HEALTHY, idle_but_full, idle_and_empty)
    assert value(found, "nvidiasmi_memory_leak_count", **A) == 0
    assert value(found, "nvidiasmi_memory_leak_count", node_name="node-a", index="1", uuid="", minor_number="1") == 1
    assert value(found, "nvidiasmi_memory_leak_count", node_name="node-a", index="2", uuid="", minor_number="3") == 0


def test_the_default_leak_threshold_ignores_bookkeeping_and_catches_a_left_context() -> None:
    """With reserved memory left out an idle data-centre GPU shows a few MiB at most; a stale context, hundreds."""
    extra = BuildInput(node_name="n", memory_leak_threshold_bytes=DEFAULT_MEMORY_LEAK_THRESHOLD_BYTES, xids=())
    bookkeeping = DeviceReading(index=0, minor_number=0, uuid="GPU-0", memory_used_bytes=4 << 20)
    stale_context = DeviceReading(index=1, minor_number=1, uuid="GPU-1", memory_used_bytes=400 << 20)
    found = build(bookkeeping, stale_context, extra=extra)
    assert value(found, "nvidiasmi_memory_leak_count", node_name="n", index="0", uuid="GPU-0", minor_number="0") == 0
    assert value(found, "nvidiasmi_memory_leak_count", node_name="n", index="1", uuid="GPU-1", minor_number="1") == 1


def test_no_leak_verdict_where_the_processes_are_unknown() -> None:
    """MIG mode and refused process lists say nothing about processes: no sample rather than a wrong 1."""
    mig = DeviceReading(index=0, minor_number=0, memory_used_bytes=GIB, mig_mode=True)
    unlisted = DeviceReading(index=1, minor_number=1, memory_used_bytes=GIB, processes_listed=False)
    found = build(mig, unlisted)
    assert "nvidiasmi_memory_leak_count" not in names(found)
    assert "pai_gpu_memory_used_bytes" in names(found)


def test_values_a_card_does_not_report_are_absent_not_zero() -> None:
    old_card = DeviceReading(index=0, minor_number=0, utilization_gpu_percent=10, temperature_celsius=50)
    found = build(old_card)
    assert value(found, "nvidiasmi_temperature", node_name="node-a", index="0", uuid="", minor_number="0") == 50
    absent = {"pai_gpu_power_watts", "pai_gpu_ecc_errors_total", "nvidiasmi_ecc_error_count"}
    assert not (absent | {"pai_gpu_memory_reserved_bytes"}) & names(found)


def test_a_lost_gpu_is_reported_lost_and_the_healthy_one_still_reported() -> None:
    lost = DeviceReading(index=1, lost=True, minor_number=5, uuid="GPU-lost")
    found = build(HEALTHY, lost)
    assert value(found, "pai_gpu_lost", node_name="node-a", index="1", uuid="GPU-lost", minor_number="5") == 1
    assert value(found, "pai_gpu_lost", **A) == 0
    assert value(found, "nvidiasmi_attached_gpus", node_name="node-a") == 2
    assert value(found, "nvidiasmi_temperature", **A) == 61
    assert [labels for name, labels in found if name == "nvidiasmi_temperature"] == [tuple(sorted(A.items()))]


def test_an_unreadable_gpu_is_named_with_its_error_class_and_nothing_else() -> None:
    unreadable = DeviceReading(index=1, error="Insufficient Permissions", error_class="no_permission")
    found = build(HEALTHY, unreadable)
    labels = {"node_name": "node-a", "index": "1", "uuid": "", "minor_number": "unknown", "error": "no_permission"}
    assert value(found, "pai_gpu_unreadable", **labels) == 1
    assert [name for name, labels in found if ("index", "1") in labels] == ["pai_gpu_unreadable"]
    assert "pai_gpu_unreadable" not in {name for name, labels in found if ("index", "0") in labels}
    assert value(found, "nvidiasmi_attached_gpus", node_name="node-a") == 2


def test_mig_instances_are_listed() -> None:
    mig_gpu = DeviceReading(
        index=0,
        minor_number=0,
        uuid="GPU-m",
        mig_mode=True,
        mig_devices=(MigReading("MIG-1", 1, 0, "3g.40gb", 1024, 40 * GIB),),
    )
    found = build(mig_gpu)
    gpu = {"node_name": "node-a", "index": "0", "uuid": "GPU-m", "minor_number": "0"}
    assert value(found, "pai_gpu_mig_mode", **gpu) == 1
    labels = {**gpu, "mig_uuid": "MIG-1", "gpu_instance_id": "1", "compute_instance_id": "0"}
    assert value(found, "pai_gpu_mig_instance_info", profile="3g.40gb", **labels) == 1
    assert value(found, "pai_gpu_mig_instance_memory_used_bytes", mig_uuid="MIG-1", **gpu) == 1024


def test_xid_counters_name_the_gpu() -> None:
    extra = BuildInput(node_name="node-a", memory_leak_threshold_bytes=0, xids=(XidCount("2", 79, 3, 1700000000.0),))
    found = build(HEALTHY, extra=extra)
    assert value(found, "pai_gpu_xid_errors_total", xid="79", **A) == 3
    assert value(found, "pai_gpu_xid_last_seen_timestamp_seconds", xid="79", **A) == 1700000000.0


def test_health_is_reported_whatever_the_nvml_status() -> None:
    found = samples(
        health_families(
            health(status="timeout", required=True, configured_gpu_count=8, worker_restarts=2, nvml_timeouts=3)
        )
    )
    assert value(found, "pai_gpu_nvml_status", node_name="node-a", status="timeout") == 1
    assert value(found, "pai_gpu_nvml_status", node_name="node-a", status="ok") == 0
    assert value(found, "pai_gpu_required", node_name="node-a") == 1
    assert value(found, "configured_gpu_count", node_name="node-a") == 8
    assert value(found, "pai_gpu_worker_restarts_total", node_name="node-a") == 2
    assert value(found, "pai_gpu_nvml_timeouts_total", node_name="node-a") == 3
    assert "pai_gpu_nvml_last_success_timestamp_seconds" not in names(found)


def test_a_missing_library_is_one_status_series_set() -> None:
    found = samples(health_families(health(status="library_not_found", last_success=1700000000.0)))
    assert value(found, "pai_gpu_nvml_status", node_name="node-a", status="library_not_found") == 1
    assert value(found, "pai_gpu_nvml_status", node_name="node-a", status="ok") == 0
    assert value(found, "pai_gpu_required", node_name="node-a") == 0
    assert value(found, "pai_gpu_nvml_last_success_timestamp_seconds", node_name="node-a") == 1700000000.0
    assert "configured_gpu_count" not in names(found)


def test_throttle_label_uses_the_original_tag_names_in_nvidia_smi_order() -> None:
    assert throttle_label(0) == ""
    assert throttle_label(0x4 | 0x10 | 0x40) == (
        "clocks_throttle_reason_sw_power_cap,clocks_throttle_reason_hw_thermal_slowdown,"
        "clocks_throttle_reason_sync_boost"
    )


def test_shared_state_finds_gpus_by_index_uuid_and_mig_uuid() -> None:
    mig_gpu = DeviceReading(
        index=1, minor_number=7, uuid="GPU-bbbb", mig_devices=(MigReading("MIG-9", 1, 0, "", 0, 0),)
    )
    state = gpu_state(Snapshot(status="ok", devices=(HEALTHY, mig_gpu)))
    assert state.device_by_id("GPU-aaaa") is not None
    assert state.device_by_id("GPU-aaaa").minor_number == "2"  # type: ignore[union-attr]
    assert state.device_by_id("MIG-9").minor_number == "7"  # type: ignore[union-attr]
    assert state.device_by_id("1").uuid == "GPU-bbbb"  # type: ignore[union-attr]
    assert [(p.pid, p.minor_number, p.used_memory_bytes) for p in state.processes] == [(4242, "2", 20 * GIB)]
