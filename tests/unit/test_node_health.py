"""The node_health collector against a fixture /proc tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_monitoring.node_health import NodeHealthCollector, NodeHealthOptions, command_name, parse_stat
from pai_monitoring.runtime.collector import CollectorContext
from tests.support.golden import check_golden, exposition

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "node_health"


def collect(threshold: int) -> str:
    context = CollectorContext(node_name="node1", proc_root=FIXTURES / "proc")
    collector = NodeHealthCollector(NodeHealthOptions(rss_threshold_bytes=threshold), context)
    return exposition(collector.collect())


def test_golden_exposition(update_golden: bool) -> None:
    check_golden(collect(500 * 1024 * 1024), FIXTURES / "expected.prom", update_golden)


def test_d_state_processes_are_counted_by_command() -> None:
    text = collect(500 * 1024 * 1024)
    # nvidia-smi itself and a trainer whose command line mentions nvidia-smi, both in D state
    assert 'zombie_process_count{command="nvidia-smi"} 2.0' in text
    assert 'zombie_process_count{command="cat"} 2.0' in text
    assert 'zombie_process_count{command="kworker/0:1"} 1.0' in text  # kernel thread: no cmdline, comm used
    assert "systemd" not in text  # sleeping (S) processes are not counted


def test_only_processes_above_the_threshold_are_reported() -> None:
    text = collect(1024 * 1024 * 1024)
    omsagent = '{cmd="/opt/microsoft/omsagent/ruby/bin/ruby /opt/microsoft/omsagent/bin/omsagent",pid="300"} 1.2288e+09'
    assert f"process_mem_usage_byte{omsagent}" in text
    assert text.count("process_mem_usage_byte{") == 1
    lower = collect(500 * 1024 * 1024)  # the 512 MiB process without a command line now passes too
    assert 'process_mem_usage_byte{cmd="[weird) name)]",pid="301"} 5.36870912e+08' in lower
    assert lower.count("process_mem_usage_byte{") == 2


def test_parse_stat_handles_parentheses_in_the_command_name() -> None:
    stat = parse_stat(7, "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 100 25 0")
    assert stat.comm == "a (b) c"
    assert stat.state == "R"
    assert stat.rss_bytes == 25 * 4096


@pytest.mark.parametrize(
    ("argv", "comm", "expected"),
    [
        (["/usr/bin/nvidia-smi", "-q"], "nvidia-smi", "nvidia-smi"),
        (["python", "watch_nvidia-smi.py"], "python", "nvidia-smi"),
        (["/usr/bin/python3", "train.py"], "python3", "python3"),
        ([], "kworker/1:2", "kworker/1:2"),
    ],
)
def test_command_name(argv: list[str], comm: str, expected: str) -> None:
    assert command_name(argv, comm) == expected


def test_vanished_proc_root_entries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()  # a process that exited between listing and reading: no stat file
    context = CollectorContext(proc_root=tmp_path)
    text = exposition(NodeHealthCollector(NodeHealthOptions(), context).collect())
    assert "zombie_process_count{" not in text
