"""The node_health collector against a fixture /proc tree, with the jobs and GPU collectors' latest results."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from pai_monitoring.jobs.kernel import parse_stat
from pai_monitoring.node_health import NodeHealthCollector, NodeHealthOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.shared_model import GPU_STATE, JOB_INDEX, GpuDevice, GpuProcess, GpuState, JobIndex, JobRef
from tests.support.golden import exposition
from tests.unit.jobs.helpers import FakeClock, samples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "node_health"
JOB_A = (
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/"
    f"cri-containerd-{'a' * 64}.scope"
)
JOB_B = "/system.slice/slurmstepd.scope/job_5151"
GIB = 1024**3


def _context(proc_root: Path) -> CollectorContext:
    context = CollectorContext(node_name="node-1", proc_root=proc_root)
    context.shared.publish(
        JOB_INDEX,
        JobIndex("", {JOB_A: JobRef("train-a", "ann", "a" * 64), JOB_B: JobRef("5151", "bob", "5151")}),
    )
    context.shared.publish(
        GPU_STATE,
        GpuState(
            devices=(GpuDevice(0, "3", "GPU-0000", 1.0, 1.0, 1, 2), GpuDevice(1, "2", "GPU-0001", 1.0, 1.0, 1, 2)),
            processes=(GpuProcess(600, "2", GIB),),
        ),
    )
    return context


def collector(
    proc_root: Path = FIXTURES / "proc", clock: FakeClock | None = None, threshold: int = 500 * 1024 * 1024
) -> NodeHealthCollector:
    options = NodeHealthOptions(rss_threshold_bytes=threshold)
    return NodeHealthCollector(options, _context(proc_root), clock=clock or FakeClock())


def test_golden_exposition(update_golden: bool) -> None:
    golden = FIXTURES / "expected.prom"
    text = exposition(collector().collect())
    if update_golden:
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} is missing; write it with --update-golden and review it"
    assert text == golden.read_text(encoding="utf-8"), f"{golden} differs; rerun with --update-golden if intended"


def test_d_state_processes_are_counted_by_command_name() -> None:
    text = exposition(collector().collect())
    assert 'zombie_process_count{command="nvidia-smi"} 1.0' in text
    # a trainer whose command line mentions nvidia-smi: its cmdline is not read (it is in D state), so it counts
    # under its own name
    assert 'zombie_process_count{command="python3"} 2.0' in text
    assert 'zombie_process_count{command="cat"} 2.0' in text
    assert 'zombie_process_count{command="kworker/0:1"} 1.0' in text
    assert "systemd" not in text  # sleeping (S) processes are not counted


def test_only_processes_above_the_threshold_are_reported_with_their_job() -> None:
    text = exposition(collector(threshold=1024 * 1024 * 1024).collect())
    omsagent = (
        '{cmd="/opt/microsoft/omsagent/ruby/bin/ruby /opt/microsoft/omsagent/bin/omsagent",container_id="",'
        'job_name="",pid="300",username=""} 1.2288e+09'
    )
    assert f"process_mem_usage_byte{omsagent}" in text
    trainer = '{cmd="python3 -m torch.distributed.run",container_id="5151",job_name="5151",pid="700",username="bob"}'
    assert f"process_mem_usage_byte{trainer}" in text
    assert text.count("process_mem_usage_byte{") == 2
    lower = exposition(collector().collect())  # the 512 MiB process without a command line now passes too
    assert 'process_mem_usage_byte{cmd="[weird) name)]",container_id="",job_name="",pid="301",username=""}' in lower
    assert lower.count("process_mem_usage_byte{") == 3


def _stuck(families: list[Metric]) -> dict[tuple[str, ...], float]:
    return {
        tuple(dict(labels)[k] for k in ("command", "job_name", "username", "container_id", "minor_number", "uuid")): v
        for labels, v in samples(families, "pai_processes_stuck").items()
    }


def test_a_process_that_stays_in_d_without_running_is_stuck_with_its_job_and_gpu(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc", proc)
    clock = FakeClock()
    health = collector(proc, clock)
    assert _stuck(list(health.collect())) == {}  # just seen in D: not stuck yet
    clock.now += 30
    assert _stuck(list(health.collect())) == {}
    # rsync was scheduled in between (its context switches moved): it is doing I/O, not hung
    status = proc / "601" / "status"
    status.write_text(status.read_text().replace("voluntary_ctxt_switches:\t50", "voluntary_ctxt_switches:\t51"))
    clock.now += 31
    stuck = _stuck(list(health.collect()))
    assert stuck[("python3", "train-a", "ann", "a" * 64, "2", "GPU-0001")] == 1
    assert stuck[("tar", "", "", "", "", "")] == 1
    assert not [row for row in stuck if row[0] == "rsync"]
    rows = samples(list(health.collect()), "pai_processes_stuck")
    assert all(dict(labels)["node_name"] == "node-1" for labels in rows)


def test_a_d_state_process_whose_cmdline_never_answers_does_not_stop_the_collection(tmp_path: Path) -> None:
    """A FIFO nobody writes to as the command line of a process in D state (and of a large process): reading
    either the usual way waits forever, as reading a hung process's cmdline can. The collection finishes and
    still counts the process."""
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc", proc)
    for pid in ("200", "300"):
        (proc / pid / "cmdline").unlink()
        os.mkfifo(proc / pid / "cmdline")
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(exposition(collector(proc).collect())), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # release the trap so that the test run can end, then fail
        for pid in ("200", "300"):
            with (proc / pid / "cmdline").open("wb"):
                pass
        pytest.fail("the collection blocked on a command line that never answers")
    assert 'zombie_process_count{command="nvidia-smi"} 1.0' in result[0]
    assert 'process_mem_usage_byte{cmd="[omsagent]"' in result[0]


def test_parse_stat_handles_parentheses_in_the_command_name() -> None:
    data = b"7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 100 25 0"
    stat = parse_stat(7, data)
    assert stat.comm == "a (b) c"
    assert stat.state == "R"
    assert stat.rss_bytes == 25 * os.sysconf("SC_PAGE_SIZE")


def test_vanished_proc_root_entries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()  # a process that exited between listing and reading: no stat file
    context = CollectorContext(proc_root=tmp_path)
    text = exposition(NodeHealthCollector(NodeHealthOptions(), context).collect())
    assert "zombie_process_count{" not in text


def test_without_the_jobs_index_the_job_labels_are_empty() -> None:
    context = CollectorContext(node_name="node-1", proc_root=FIXTURES / "proc")
    text = exposition(NodeHealthCollector(NodeHealthOptions(), context).collect())
    assert 'container_id="",job_name="",pid="700",username=""' in text


def test_invalid_stuck_seconds_names_the_option() -> None:
    with pytest.raises(ConfigError) as error:
        NodeHealthOptions(stuck_seconds=0).validate()
    assert error.value.flag == "stuck_seconds"
