"""GPU collector options: bad values are refused with the option's name; the configured count comes from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pai_monitoring.gpu.collector import GpuOptions, configured_count_from_file, worker_deadline
from pai_monitoring.runtime.errors import ConfigError


@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"memory_leak_threshold_bytes": -1}, "memory_leak_threshold_bytes"),
        ({"configured_count": -2}, "configured_count"),
        ({"library_retry_iterations": 0}, "library_retry_iterations"),
    ],
)
def test_invalid_values_name_the_option(values: dict[str, int], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        GpuOptions(**values).validate()  # type: ignore[arg-type]
    assert info.value.flag == flag


def test_defaults_are_valid() -> None:
    GpuOptions().validate()


def test_configured_count_is_read_for_this_node(tmp_path: Path) -> None:
    path = tmp_path / "gpu-configuration.json"
    path.write_text(json.dumps({"nodes": {"node-a": {"gpuCount": 8}, "node-b": {"gpuCount": 4}}}))
    assert configured_count_from_file(path, "node-b") == 4
    assert configured_count_from_file(path, "node-c") is None


def test_the_worker_deadline_leaves_room_inside_the_collection_timeout() -> None:
    for timeout in (0.5, 2.0, 20.0, 120.0):
        assert 0 < worker_deadline(timeout) < timeout
