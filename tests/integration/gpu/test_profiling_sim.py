"""Profiling metrics (NVML GPM), NVLink and PCIe counters (field values) and per-process utilisation, through the real
``pynvml`` binding on the simulated NVML library (a stand-in for hardware)."""

from __future__ import annotations

import pytest

from pai_monitoring.shared_model import GPU_STATE
from tests.integration.gpu.conftest import (
    NODE,
    MakeCollector,
    Samples,
    Scenario,
    collect_paced,
    gpu_id,
    gpus,
    samples,
    series,
    value,
)

pytestmark = pytest.mark.integration

GPM = "gpu.{i}.gpm.supported = 1\n"
WHOLE = {"gpu_instance_id": ""}


def status(found: Samples, index: int, instance: str = "") -> str:
    """The profiling status that is 1 for a GPU (or GPU instance)."""
    current = [
        s["status"]
        for s in series(found, "pai_gpu_profiling_status")
        if s["index"] == str(index)
        and s["gpu_instance_id"] == instance
        and value(found, "pai_gpu_profiling_status", **s)
    ]
    assert len(current) == 1, current
    return current[0]


def profiled(found: Samples, index: int) -> set[str]:
    """Names of the profiling families a GPU has series in."""
    names = {
        "pai_gpu_sm_active_ratio",
        "pai_gpu_sm_occupancy_ratio",
        "pai_gpu_graphics_engine_active_ratio",
        "pai_gpu_dram_active_ratio",
        "pai_gpu_pipe_active_ratio",
        "pai_gpu_pcie_throughput_bytes_per_second",
        "pai_gpu_nvlink_throughput_bytes_per_second",
    }
    return {name for name in names for s in series(found, name) if s["index"] == str(index)}


def test_gpm_metrics_cover_the_window_between_two_collections(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(1) + GPM.format(i=0) + "gpu.0.gpm.sm = 40\n")
    collector = make_collector()
    first = samples(collect_paced(collector))
    assert status(first, 0) == "first_sample"
    assert profiled(first, 0) == set()  # one sample is no measurement: absent, not zero
    scenario.append("gpu.0.gpm.sm = 60\n")
    second = samples(collect_paced(collector))
    assert status(second, 0) == "ok"
    # the window runs from the first collection's sample (40 %) to the second's (60 %)
    assert value(second, "pai_gpu_sm_active_ratio", **WHOLE, **gpu_id(0)) == pytest.approx(0.5)
    third = samples(collect_paced(collector))
    assert value(third, "pai_gpu_sm_active_ratio", **WHOLE, **gpu_id(0)) == pytest.approx(0.6)


def test_each_gpm_metric_lands_in_its_own_series(scenario: Scenario, make_collector: MakeCollector) -> None:
    settings = {
        "graphics": ("pai_gpu_graphics_engine_active_ratio", {}),
        "sm": ("pai_gpu_sm_active_ratio", {}),
        "sm_occupancy": ("pai_gpu_sm_occupancy_ratio", {}),
        "dram_bw": ("pai_gpu_dram_active_ratio", {}),
        "tensor": ("pai_gpu_pipe_active_ratio", {"pipe": "tensor"}),
        "dfma_tensor": ("pai_gpu_pipe_active_ratio", {"pipe": "tensor_dfma"}),
        "dmma_tensor": ("pai_gpu_pipe_active_ratio", {"pipe": "tensor_dmma"}),
        "hmma_tensor": ("pai_gpu_pipe_active_ratio", {"pipe": "tensor_hmma"}),
        "imma_tensor": ("pai_gpu_pipe_active_ratio", {"pipe": "tensor_imma"}),
        "fp64": ("pai_gpu_pipe_active_ratio", {"pipe": "fp64"}),
        "fp32": ("pai_gpu_pipe_active_ratio", {"pipe": "fp32"}),
        "fp16": ("pai_gpu_pipe_active_ratio", {"pipe": "fp16"}),
        "integer": ("pai_gpu_pipe_active_ratio", {"pipe": "integer"}),
    }
    rates = {
        "pcie_tx": ("pai_gpu_pcie_throughput_bytes_per_second", {"direction": "transmit"}),
        "pcie_rx": ("pai_gpu_pcie_throughput_bytes_per_second", {"direction": "receive"}),
        "nvlink_tx": ("pai_gpu_nvlink_throughput_bytes_per_second", {"direction": "transmit"}),
        "nvlink_rx": ("pai_gpu_nvlink_throughput_bytes_per_second", {"direction": "receive"}),
    }
    distinct = {name: 3 + 5 * n for n, name in enumerate([*settings, *rates])}  # percent, or MiB/s
    scenario.write(gpus(1) + GPM.format(i=0) + "".join(f"gpu.0.gpm.{k} = {v}\n" for k, v in distinct.items()))
    collector = make_collector()
    collect_paced(collector)
    found = samples(collect_paced(collector))
    for key, (family, labels) in settings.items():
        assert value(found, family, **labels, **WHOLE, **gpu_id(0)) == pytest.approx(distinct[key] / 100), key
    for key, (family, labels) in rates.items():
        assert value(found, family, **labels, **WHOLE, **gpu_id(0)) == distinct[key] * 1024 * 1024, key


def test_profiling_series_are_absent_where_gpm_is_not_and_the_status_says_why(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(3) + GPM.format(i=0) + GPM.format(i=2) + "gpu.2.gpm.fp64 = -\ngpu.2.gpm.dmma_tensor = -\n")
    collector = make_collector()
    collect_paced(collector)
    found = samples(collect_paced(collector))
    assert status(found, 0) == "ok"
    assert status(found, 1) == "unsupported_gpu"
    assert profiled(found, 1) == set()
    assert value(found, "pai_gpu_sm_active_ratio", **WHOLE, **gpu_id(0)) == 0  # an idle GPU with GPM: zero, not absent
    pipes = {s["pipe"] for s in series(found, "pai_gpu_pipe_active_ratio") if s["index"] == "2"}
    assert "fp32" in pipes
    assert not pipes & {"fp64", "tensor_dmma"}  # metrics this GPU does not offer


def test_a_driver_without_gpm_says_so(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(2) + GPM.format(i=0) + "fault.nvmlGpmQueryDeviceSupport = FUNCTION_NOT_FOUND\n")
    collector = make_collector()
    for _ in range(2):
        found = samples(collect_paced(collector))
        assert [status(found, i) for i in (0, 1)] == ["unsupported_driver", "unsupported_driver"]
        assert profiled(found, 0) == set()
        assert value(found, "nvidiasmi_utilization_gpu", **gpu_id(0)) == 10  # the rest of the GPU is still read


def test_a_failing_gpm_sample_is_an_error_and_the_next_window_starts_afresh(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(gpus(1) + GPM.format(i=0) + "gpu.0.gpm.sm = 30\n")
    collector = make_collector()
    collect_paced(collector)
    scenario.append("gpu.0.fault.nvmlGpmSampleGet = UNKNOWN\n")
    found = samples(collect_paced(collector))
    assert status(found, 0) == "error"
    assert profiled(found, 0) == set()
    scenario.write(scenario.text.replace("gpu.0.fault.nvmlGpmSampleGet = UNKNOWN\n", ""))
    assert status(samples(collect_paced(collector)), 0) == "first_sample"
    found = samples(collect_paced(collector))
    assert value(found, "pai_gpu_sm_active_ratio", **WHOLE, **gpu_id(0)) == pytest.approx(0.3)


def test_gpu_instances_of_a_gpu_in_mig_mode_are_profiled_each(
    scenario: Scenario, make_collector: MakeCollector
) -> None:
    scenario.write(
        gpus(1)
        + GPM.format(i=0)
        + "gpu.0.mig.mode = 1\n"
        + "gpu.0.mig.0 = MIG-aaaa 1 0 3g.71gb 1048576 75161927680\n"
        + "gpu.0.mig.1 = MIG-bbbb 1 1 3g.71gb 0 75161927680\n"  # a second compute instance of GPU instance 1
        + "gpu.0.mig.2 = MIG-cccc 2 0 3g.71gb 0 75161927680\n"
        + "gpu.0.gi.1.gpm.sm = 70\ngpu.0.gi.1.gpm.tensor = 40\ngpu.0.gi.2.gpm.sm = 5\n"
    )
    collector = make_collector()
    first = samples(collect_paced(collector))
    assert [status(first, 0, gi) for gi in ("", "1", "2")] == ["mig_mode", "first_sample", "first_sample"]
    found = samples(collect_paced(collector))
    assert status(found, 0) == "mig_mode"
    assert status(found, 0, "1") == "ok"
    sm = {
        s["gpu_instance_id"]: value(found, "pai_gpu_sm_active_ratio", **s)
        for s in series(found, "pai_gpu_sm_active_ratio")
    }
    assert sm == {"1": pytest.approx(0.7), "2": pytest.approx(0.05)}  # one series per GPU instance, none for the GPU
    assert value(found, "pai_gpu_pipe_active_ratio", pipe="tensor", gpu_instance_id="1", **gpu_id(0)) == pytest.approx(
        0.4
    )


def test_nvlink_counters_of_a_hopper_gpu(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(
        gpus(2)
        + "gpu.0.nvlink.count = 18\n"
        + "gpu.0.nvlink.17.state = 0\ngpu.0.nvlink.3.state = 2\n"
        + "gpu.0.nvlink.5.crc = 12\ngpu.0.nvlink.5.replay = 3\ngpu.0.nvlink.5.recovery = 1\ngpu.0.nvlink.16.crc = 1\n"
        + "gpu.0.nvlink.0.tx_kib = 1000\ngpu.0.nvlink.0.rx_kib = 2000\ngpu.0.nvlink.9.tx_kib = 24\n"
    )
    collector = make_collector()
    found = samples(collect_paced(collector))
    up = {s["link"]: value(found, "pai_gpu_nvlink_link_up", **s) for s in series(found, "pai_gpu_nvlink_link_up")}
    assert up == {str(link): (0 if link == 17 else 1) for link in range(18)}  # link 3 is asleep, not down
    # errors and data over all links (links 12-17 exist only in Hopper's per-link scope ids)
    errors = {
        s["type"]: value(found, "pai_gpu_nvlink_errors_total", **s)
        for s in series(found, "pai_gpu_nvlink_errors_total")
    }
    assert errors == {"crc": 13, "replay": 3, "recovery": 1}  # no crc_data on Hopper
    assert value(found, "pai_gpu_nvlink_data_bytes_total", direction="transmit", **gpu_id(0)) == 1024 * 1024
    assert value(found, "pai_gpu_nvlink_data_bytes_total", direction="receive", **gpu_id(0)) == 2000 * 1024
    assert {s["index"] for s in series(found, "pai_gpu_nvlink_link_up")} == {"0"}  # GPU 1 has no NVLink
    assert {s["index"] for s in series(found, "pai_gpu_nvlink_errors_total")} == {"0"}
    scenario.append("gpu.0.nvlink.5.crc = 20\n")
    again = samples(collect_paced(collector))
    assert value(again, "pai_gpu_nvlink_errors_total", type="crc", **gpu_id(0)) == 21


def test_nvlink_counters_of_a_gpu_before_hopper(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(
        gpus(1)
        + "gpu.0.nvlink.count = 12\ngpu.0.nvlink.legacy = 1\ngpu.0.nvlink.11.state = 0\n"
        + "gpu.0.nvlink.9.crc = 4\ngpu.0.nvlink.9.crc_data = 2\ngpu.0.nvlink.9.replay = 1\ngpu.0.nvlink.11.crc = 1\n"
    )
    collector = make_collector()
    for _ in range(2):  # the first collection probes which fields answer, the second asks only those
        found = samples(collect_paced(collector))
        up = {s["link"]: value(found, "pai_gpu_nvlink_link_up", **s) for s in series(found, "pai_gpu_nvlink_link_up")}
        assert up == {str(link): (0 if link == 11 else 1) for link in range(12)}
        errors = {
            s["type"]: value(found, "pai_gpu_nvlink_errors_total", **s)
            for s in series(found, "pai_gpu_nvlink_errors_total")
        }
        assert errors == {"crc": 5, "crc_data": 2, "replay": 1, "recovery": 0}


def test_pcie_counters_where_the_driver_has_them(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(
        gpus(2)
        + "gpu.0.pcie.correctable = 7\ngpu.0.pcie.fatal = 1\ngpu.0.pcie.replay_rollover = 2\n"
        + "gpu.0.pcie.tx_bytes = 1234\ngpu.0.pcie.rx_bytes = 5678\ngpu.0.pcie_replay = 9\n"
        + "gpu.1.pcie.counters = 0\n"
    )
    found = samples(collect_paced(make_collector()))
    assert value(found, "pai_gpu_pcie_errors_total", type="correctable", **gpu_id(0)) == 7
    assert value(found, "pai_gpu_pcie_errors_total", type="fatal", **gpu_id(0)) == 1
    assert value(found, "pai_gpu_pcie_errors_total", type="replay_rollover", **gpu_id(0)) == 2
    assert value(found, "pai_gpu_pcie_errors_total", type="bad_tlp", **gpu_id(0)) == 0
    assert value(found, "pai_gpu_pcie_replay_total", **gpu_id(0)) == 9  # the replay counter beside them
    assert value(found, "pai_gpu_pcie_data_bytes_total", direction="transmit", **gpu_id(0)) == 1234
    assert value(found, "pai_gpu_pcie_data_bytes_total", direction="receive", **gpu_id(0)) == 5678
    assert {s["index"] for s in series(found, "pai_gpu_pcie_errors_total")} == {"0"}  # older driver on GPU 1: absent


def test_a_field_the_gpu_refuses_leaves_the_others(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(1) + "gpu.0.nvlink.count = 2\ngpu.0.nvlink.1.crc = 5\ngpu.0.field.173 = NO_PERMISSION\n")
    found = samples(collect_paced(make_collector()))
    assert value(found, "pai_gpu_pcie_errors_total", type="correctable", **gpu_id(0)) is None
    assert value(found, "pai_gpu_pcie_errors_total", type="fatal", **gpu_id(0)) == 0
    assert value(found, "pai_gpu_nvlink_errors_total", type="crc", **gpu_id(0)) == 5


@pytest.mark.parametrize("old_driver", [False, True], ids=["processes_utilization_info", "process_utilization"])
def test_per_process_utilisation_on_a_shared_gpu(
    scenario: Scenario, make_collector: MakeCollector, old_driver: bool
) -> None:
    scenario.write(
        gpus(2)
        + "gpu.0.process.0 = 5000 1073741824\ngpu.0.process.1 = 5001 1073741824\ngpu.0.process.2 = 5002 1048576\n"
        + "gpu.0.process_util.0 = 5000 30 12\ngpu.0.process_util.1 = 5001 6 2\n"
        + "gpu.1.process.0 = 6000 1048576\n"
        + ("fault.nvmlDeviceGetProcessesUtilizationInfo = FUNCTION_NOT_FOUND\n" if old_driver else "")
    )
    collector = make_collector()
    for _ in range(2):
        found = samples(collect_paced(collector))
        sm = {
            (s["index"], s["pid"]): value(found, "pai_gpu_process_sm_utilization_ratio", **s)
            for s in series(found, "pai_gpu_process_sm_utilization_ratio")
        }
        # each process its own figure; a process with a context but no kernels ran 0 %
        assert sm == {("0", "5000"): 0.3, ("0", "5001"): 0.06, ("0", "5002"): 0.0, ("1", "6000"): 0.0}
        assert value(found, "pai_gpu_process_memory_utilization_ratio", pid="5000", **gpu_id(0)) == 0.12
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    published = {p.pid: (p.sm_utilization_percent, p.memory_utilization_percent) for p in state.processes}
    assert published == {5000: (30, 12), 5001: (6, 2), 5002: (0, 0), 6000: (0, 0)}


def test_no_per_process_utilisation_in_mig_mode(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(
        gpus(1)
        + "gpu.0.mig.mode = 1\ngpu.0.mig.0 = MIG-aaaa 1 0 3g.71gb 1048576 75161927680\n"
        + "gpu.0.process.0 = 5000 1048576\ngpu.0.process_util.0 = 5000 30 12\n"
    )
    collector = make_collector()
    found = samples(collect_paced(collector))
    assert value(found, "pai_gpu_process_memory_bytes", pid="5000", **gpu_id(0)) == 1048576
    assert series(found, "pai_gpu_process_sm_utilization_ratio") == []  # unknown, not zero
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    assert [p.sm_utilization_percent for p in state.processes] == [None]


def test_the_gpu_state_carries_sm_activity_and_energy(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(2) + GPM.format(i=0) + "gpu.0.gpm.sm = 25\ngpu.0.energy = 5000000\ngpu.0.power = 250000\n")
    collector = make_collector()
    collect_paced(collector)
    collect_paced(collector)
    state = collector.context.shared.latest(GPU_STATE, max_age=60)
    assert state is not None
    zero, one = state.devices
    assert (zero.sm_active_ratio, zero.energy_joules, zero.power_watts) == (pytest.approx(0.25), 5000.0, 250.0)
    assert one.sm_active_ratio is None  # no GPM on GPU 1


def test_profiling_restarts_with_a_new_worker(scenario: Scenario, make_collector: MakeCollector) -> None:
    scenario.write(gpus(1) + GPM.format(i=0) + "gpu.0.gpm.sm = 50\n")
    collector = make_collector(timeout=2.0)
    collect_paced(collector)
    assert status(samples(collect_paced(collector)), 0) == "ok"
    scenario.append("block.nvmlDeviceGetCount_v2 = 30\n")
    hung = samples(collect_paced(collector))
    assert value(hung, "pai_gpu_nvml_status", status="timeout", **NODE) == 1
    assert series(hung, "pai_gpu_profiling_status") == []  # nothing is said about a GPU NVML does not answer for
    scenario.write(scenario.text.replace("block.nvmlDeviceGetCount_v2 = 30\n", ""))
    assert status(samples(collect_paced(collector)), 0) == "first_sample"  # a new worker has no previous sample
    found = samples(collect_paced(collector))
    assert value(found, "pai_gpu_sm_active_ratio", **WHOLE, **gpu_id(0)) == pytest.approx(0.5)
