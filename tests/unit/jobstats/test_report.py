"""pai-jobstats without Prometheus: the hints' thresholds, the text and JSON, the PromQL it builds, its arguments."""

from __future__ import annotations

import json
import socket

import pytest

from pai_monitoring.jobstats import queries, render
from pai_monitoring.jobstats.cli import main, seconds
from pai_monitoring.jobstats.report import GpuUse, Job, Report, hints

GIB = 1 << 30
JOB = Job(
    ident="alice~train",
    job_name="alice~train",
    username="alice",
    task_selector='job_name="alice~train"',
    nodes=("gpu-node-1:9102",),
    tasks=1,
    start=1_700_000_000.0,
    end=1_700_014_400.0,
)


def gpu(index: int, **figures: float) -> GpuUse:
    defaults: dict[str, float] = {
        "utilization_percent": 90.0,
        "card_idle_share": 0.0,
        "memory_peak_bytes": 60 * GIB,
        "memory_total_bytes": 80 * GIB,
    }
    return GpuUse(
        instance="gpu-node-1:9102", minor_number=str(index), node_name="gpu-node-1", index=str(index),
        uuid=f"GPU-{index}", **{**defaults, **figures},  # type: ignore[arg-type]
    )  # fmt: skip


def report(*gpus: GpuUse, **totals: float) -> Report:
    fields: dict[str, float | None] = {
        "cpu_core_seconds": 4 * JOB.seconds,
        "cpu_peak_cores": 6.0,
        "cpus": None,
        "host_memory_peak_bytes": 20 * GIB,
        "host_memory_limit_bytes": 64 * GIB,
    }
    return Report(job=JOB, gpus=gpus, **{**fields, **totals})  # type: ignore[arg-type]


def test_idle_gpus_are_counted_and_named_in_plain_language() -> None:
    found = hints(report(gpu(0), gpu(1), gpu(2, card_idle_share=0.93), gpu(3, card_idle_share=0.9)))
    assert found == [
        "2 of 4 GPUs were idle for at least 90 % of the job: ask for fewer GPUs, or check that the job spreads its "
        "work over all of them."
    ]
    assert report(gpu(0), gpu(1, card_idle_share=0.5)).gpus_used == 1
    assert hints(report(gpu(0), gpu(1, card_idle_share=0.49))) == []  # under half the time idle: used


def test_a_jobs_own_figures_win_over_the_cards() -> None:
    """On a GPU another job keeps busy, this job can still have left it idle; its own energy is its share."""
    shared = gpu(0, card_idle_share=0.0, own_idle_share=0.95, own_use=0.01, card_energy_joules=9e6)
    mine = gpu(1, own_idle_share=0.0, own_use=0.9, card_energy_joules=4e6, own_energy_joules=3.6e6)
    done = report(shared, mine)
    assert [g.idle for g in done.gpus] == [True, False]
    assert hints(done)[0].startswith("1 of 2 GPUs was idle for at least 95 % of the job")
    assert done.gpu_energy_joules == 9e6 + 3.6e6
    assert not done.energy_is_share
    both = report(mine, gpu(2, own_energy_joules=1e6))
    assert both.energy_is_share
    assert "the job's share of each GPU's" in render.text(both)


def test_a_job_that_never_used_its_gpus() -> None:
    assert hints(report(gpu(0, card_idle_share=1.0), gpu(1, card_idle_share=1.0))) == [
        "All 2 GPUs were idle for the whole job: the job may hang, or never use its GPUs."
    ]
    assert hints(report(gpu(0, card_idle_share=1.0))) == [
        "The job's GPU was idle for the whole job: the job may hang, or never use its GPUs."
    ]


def test_busy_gpus_with_few_sms_or_idle_tensor_cores() -> None:
    few_sms = gpu(0, utilization_percent=95.0, sm_active=0.12, tensor_active=0.0)
    no_tensor = gpu(1, sm_active=0.7, tensor_active=0.01)
    fine = gpu(2, sm_active=0.8, tensor_active=0.5)
    unknown = gpu(3)  # no GPM: nothing said
    assert hints(report(few_sms, no_tensor, fine, unknown)) == [
        "GPU 0 of gpu-node-1 ran kernels 95 % of the time but only 12 % of its SMs worked: its kernels are small for "
        "it (a larger batch helps) or it waits on data between them.",
        "GPU 1 of gpu-node-1 kept its SMs busy but its tensor cores idle: mixed precision (BF16, FP16 or TF32) would "
        "use them.",
    ]
    assert hints(report(gpu(0, utilization_percent=49.0, sm_active=0.1))) == []


def test_gpu_memory_nearly_full_or_mostly_unused() -> None:
    assert hints(report(gpu(0, memory_peak_bytes=78 * GIB), gpu(1))) == [
        "GPU memory peaked at 98 % of GPU 0 of gpu-node-1: the job is close to running out."
    ]
    assert hints(report(gpu(0, memory_peak_bytes=8 * GIB), gpu(1, memory_peak_bytes=2 * GIB))) == [
        "The job used at most 10 % of its GPUs' memory: a smaller GPU or a MIG slice would do."
    ]
    assert hints(report(gpu(0, memory_peak_bytes=20 * GIB))) == []  # exactly a quarter: not small


def test_host_memory_and_cpu() -> None:
    assert hints(report(gpu(0), host_memory_peak_bytes=60 * GIB)) == [
        "Host memory peaked at 94 % of the limit: the job is close to being killed for running out."
    ]
    assert hints(report(gpu(0), cpus=32.0)) == [
        "The job kept 4.0 of its 32 CPU cores busy on average (12 %): it could ask for fewer."
    ]
    assert hints(report(gpu(0), cpus=16.0)) == []  # exactly a quarter
    assert hints(report(gpu(0))) == []  # without the cores it was given, no efficiency


def test_text_and_json_carry_the_same_figures() -> None:
    done = report(gpu(0, sm_active=0.8, own_energy_joules=7.2e6), gpu(1, card_idle_share=1.0), cpus=8.0)
    done = Report(**{**done.__dict__, "hints": tuple(hints(done))})
    text = render.text(done)
    assert "Job alice~train of alice: 1 task(s) on gpu-node-1:9102" in text
    assert "(4 h 00 min, as Prometheus saw it)" in text
    assert "GPUs: 2 held, 1 used" in text
    assert "60.0 GiB / 80.0 GiB" in text
    assert "CPU: 4.0 cores busy on average, 6.0 at the peak; 50 % of the 8 cores given" in text
    assert "Host memory: peak 20.0 GiB of a 64.0 GiB limit (31 %)" in text
    assert "GPU energy: 2.00 kWh (whole GPUs" in text  # GPU 1 has no share of its own
    assert "- 1 of 2 GPUs was idle for the whole job" in text
    data = json.loads(render.as_json(done))
    assert data["gpus"]["held"] == 2
    assert data["gpus"]["used"] == 1
    assert data["gpus"]["energy_joules"] == 7.2e6
    assert data["gpus"]["devices"][0]["utilization_ratio"] == 0.9
    assert data["cpu"]["efficiency_ratio"] == 0.5
    assert data["hints"] == list(done.hints)


def test_names_with_quotes_cannot_break_out_of_the_selector() -> None:
    assert queries.selector({"job_name": 'a"b\\c'}) == 'job_name="a\\"b\\\\c"'
    assert queries.candidates("ns/pod-0") == [{"job_name": "ns/pod-0"}, {"namespace": "ns", "pod_name": "pod-0"}]
    assert queries.candidates("12345") == [{"job_name": "12345"}, {"pod_name": "12345"}]


@pytest.mark.parametrize(("text", "value"), [("90s", 90.0), ("1h30m", 5400.0), ("7d", 604800.0)])
def test_durations(text: str, value: float) -> None:
    assert seconds(text) == value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lookback", "7 days", "x"], "not a duration"),
        (["--step", "0s", "x"], "must be longer than nothing"),
        (["--prometheus", "ftp://example", "x"], "not an http(s) URL"),
        (["--step", "2h", "--lookback", "1h", "x"], "longer than --lookback"),
        (["--cpus", "-1", "x"], "must be above 0"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(args)
    except SystemExit as exc:  # argparse's own checks
        status = int(str(exc.code))
    assert status == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_prometheus_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["--prometheus", url, "--timeout", "2", "x"]) == 2
    assert f"cannot reach Prometheus at {url}" in capsys.readouterr().err
