"""Profiling readings to families, and the pure parts of the worker's GPM, field-value and utilisation readers."""

from __future__ import annotations

from typing import NamedTuple

import pynvml
import pytest

from pai_monitoring.gpu import fields, gpm, profiling
from pai_monitoring.gpu.model import DeviceReading, GpmReading, NvLinkReading
from pai_monitoring.gpu.process_util import Utilization, mean_by_pid
from pai_monitoring.gpu.profiling_families import GPM_SERIES
from tests.unit.gpu.test_metrics import HEALTHY, build, value

A = {"node_name": "node-a", "index": "0", "uuid": "GPU-aaaa", "minor_number": "2"}
WHOLE = {"gpu_instance_id": "", **A}


def test_every_gpm_metric_the_worker_reads_has_a_family() -> None:
    read = [key for _, key in gpm.METRIC_IDS]
    assert sorted(read) == sorted(profiling.GPM_KEYS) == sorted(GPM_SERIES)
    assert len({metric for metric, _ in gpm.METRIC_IDS}) == len(gpm.METRIC_IDS)


def test_ratios_are_clamped_and_rates_in_bytes() -> None:
    reading = GpmReading("ok", (("sm", 100.4), ("dram", -0.2), ("pipe_fp16", 12.5), ("pcie_rx", 2.0)))
    found = build(HEALTHY._replace(gpm=reading))
    assert value(found, "pai_gpu_sm_active_ratio", **WHOLE) == 1.0
    assert value(found, "pai_gpu_dram_active_ratio", **WHOLE) == 0.0
    assert value(found, "pai_gpu_pipe_active_ratio", pipe="fp16", **WHOLE) == 0.125
    assert value(found, "pai_gpu_pcie_throughput_bytes_per_second", direction="receive", **WHOLE) == 2 * 1024 * 1024
    assert value(found, "pai_gpu_profiling_status", status="ok", **WHOLE) == 1
    assert value(found, "pai_gpu_profiling_status", status="error", **WHOLE) == 0


@pytest.mark.parametrize("reason", ["first_sample", "unsupported_gpu", "unsupported_driver", "error"])
def test_without_metrics_only_the_status_says_why(reason: str) -> None:
    found = build(HEALTHY._replace(gpm=GpmReading(reason)))  # type: ignore[arg-type]
    assert value(found, "pai_gpu_profiling_status", status=reason, **WHOLE) == 1
    assert sum(1 for name, _ in found if name == "pai_gpu_profiling_status") == 6
    assert not {name for name, _ in found} & {name for name, _, _ in GPM_SERIES.values()}  # type: ignore[misc]


def test_a_gpu_that_was_not_profiled_has_no_status() -> None:
    found = build(HEALTHY)
    assert "pai_gpu_profiling_status" not in {name for name, _ in found}


def test_gpu_instances_get_their_own_series() -> None:
    device = HEALTHY._replace(
        mig_mode=True,
        gpm=GpmReading("mig_mode"),
        instance_gpm=((1, GpmReading("ok", (("sm", 50.0),))), (2, GpmReading("first_sample"))),
    )
    found = build(device)
    assert value(found, "pai_gpu_profiling_status", status="mig_mode", **WHOLE) == 1
    assert value(found, "pai_gpu_sm_active_ratio", **{**WHOLE, "gpu_instance_id": "1"}) == 0.5
    assert value(found, "pai_gpu_profiling_status", status="first_sample", **{**WHOLE, "gpu_instance_id": "2"}) == 1


def test_nvlink_and_pcie_counters_in_base_units() -> None:
    device = HEALTHY._replace(
        nvlinks=(NvLinkReading(0, up=True), NvLinkReading(1, up=False)),
        nvlink_errors=(("crc", 4),),
        nvlink_tx_kib=3,
        pcie_errors=(("fatal", 1),),
        pcie_tx_bytes=10,
    )
    found = build(device)
    assert value(found, "pai_gpu_nvlink_link_up", link="0", **A) == 1
    assert value(found, "pai_gpu_nvlink_link_up", link="1", **A) == 0
    assert value(found, "pai_gpu_nvlink_errors_total", type="crc", **A) == 4
    assert value(found, "pai_gpu_nvlink_data_bytes_total", direction="transmit", **A) == 3072
    assert value(found, "pai_gpu_nvlink_data_bytes_total", direction="receive", **A) is None
    assert value(found, "pai_gpu_pcie_errors_total", type="fatal", **A) == 1
    assert value(found, "pai_gpu_pcie_data_bytes_total", direction="transmit", **A) == 10
    assert value(found, "pai_gpu_pcie_data_bytes_total", direction="receive", **A) is None


class Sample(NamedTuple):
    pid: int
    timeStamp: int
    smUtil: int
    memUtil: int


def test_per_process_utilisation_is_the_mean_of_the_samples() -> None:
    by_pid, newest = mean_by_pid([Sample(1, 10, 50, 10), Sample(2, 11, 5, 0), Sample(1, 12, 70, 30)])
    assert by_pid == {1: Utilization(60.0, 20.0), 2: Utilization(5.0, 0.0)}
    assert newest == 12
    assert mean_by_pid([]) == ({}, 0)


def test_field_candidates_ask_both_generations_per_link_and_scope_by_link() -> None:
    found = fields.candidates(14)
    links = {f.key[1] for f in found if f.key[0] == "error"}
    assert links == {str(link) for link in range(14)}
    crc = [f for f in found if f.key == ("error", "3", "crc")]
    assert [(f.field, f.scope) for f in crc] == [
        (pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_CRC, 3),  # Hopper: the link is the scope, asked first
        (pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L3, 0),
    ]
    # links 12 and 13 exist only on GPUs with the scoped fields
    assert [f.field for f in found if f.key == ("error", "13", "crc")] == [pynvml.NVML_FI_DEV_NVLINK_ERROR_DL_CRC]
    assert len({(f.field, f.scope) for f in found}) == len(found)


def test_field_values_are_read_by_their_type() -> None:
    answers = (pynvml.c_nvmlFieldValue_t * 4)()
    answers[0].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    answers[0].value.ullVal = 2**40
    answers[1].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    answers[1].value.uiVal = 7
    answers[2].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    answers[2].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
    answers[2].value.uiVal = 9
    answers[3].valueType = 99
    assert fields.answers_of(answers) == [
        (pynvml.NVML_SUCCESS, 2**40),
        (pynvml.NVML_SUCCESS, 7),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, None),
        (pynvml.NVML_SUCCESS, None),
    ]


def test_a_device_reading_without_profiling_is_unchanged() -> None:
    assert DeviceReading(index=0).gpm is None
    assert DeviceReading(index=0).nvlinks == ()
