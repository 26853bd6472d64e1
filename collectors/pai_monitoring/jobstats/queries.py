"""The PromQL that pai-jobstats asks, in one place: the job's series by name, pod or Slurm id, and its figures.

The selectors use the jobs collector's labels (``job_name`` is a PAI job's name or a Slurm job's id, ``task_info``
also carries ``pod_name`` and ``namespace``); GPU figures join the GPU collector's series on ``instance`` and
``minor_number``, the two labels both collectors put on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping

JOB_LABELS = ("job_name", "username", "role_name", "task_index", "job_instance_id", "virtual_cluster")
"""The labels of every task_* series; ``instance`` says which node."""
IDLE_RULE = "instance_minor_number:nvidiasmi_utilization_gpu:idle"
OWN_IDLE_RULE = "task:task_gpu_sm_utilization_ratio:idle"


def quote(value: str) -> str:
    """A PromQL string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(matchers: Mapping[str, str]) -> str:
    return ",".join(f"{name}={quote(value)}" for name, value in sorted(matchers.items()))


def candidates(ident: str) -> list[dict[str, str]]:
    """Ways to find a job on task_info, in order: PAI job name or Slurm job id, then pod (``namespace/pod`` or pod)."""
    found = [{"job_name": ident}]
    namespace, slash, pod = ident.partition("/")
    found.append({"namespace": namespace, "pod_name": pod} if slash else {"pod_name": ident})
    return found


def tasks(matchers: Mapping[str, str], lookback: str) -> str:
    """Each task (container or Slurm job) that matches, by node: its job labels."""
    return (
        f"count by (instance, {', '.join(JOB_LABELS)}) (last_over_time(task_info{{{selector(matchers)}}}[{lookback}]))"
    )


def first_seen(matchers: Mapping[str, str], lookback: str, step: str) -> str:
    return f"min(min_over_time(timestamp(task_info{{{selector(matchers)}}})[{lookback}:{step}]))"


def last_seen(matchers: Mapping[str, str], lookback: str, step: str) -> str:
    return f"max(max_over_time(timestamp(task_info{{{selector(matchers)}}})[{lookback}:{step}]))"


def job_gpus(task: str, window: str) -> str:
    """The GPUs the job held in the window, one series per (instance, minor_number)."""
    return (
        f"group by (instance, minor_number) (last_over_time(task_gpu_percent{{{task}}}[{window}]) "
        f"or last_over_time(task_gpu_memory_bytes{{{task}}}[{window}]))"
    )


def per_gpu(task: str, window: str) -> dict[str, str]:
    """One query per figure of each GPU the job held, all over the window that ends at the query's time."""
    held = job_gpus(task, window)

    def on_held(expr: str) -> str:
        return f"({expr}) and on (instance, minor_number) {held}"

    return {
        "info": on_held(f"last_over_time(pai_gpu_info[{window}])"),
        "utilization": on_held(f"avg_over_time(nvidiasmi_utilization_gpu[{window}])"),
        "idle_share": on_held(f"avg_over_time({IDLE_RULE}[{window}])"),
        "sm_active": on_held(f'avg_over_time(pai_gpu_sm_active_ratio{{gpu_instance_id=""}}[{window}])'),
        "tensor_active": on_held(
            f'avg_over_time(pai_gpu_pipe_active_ratio{{gpu_instance_id="",pipe="tensor"}}[{window}])'
        ),
        "memory_total": on_held(f"max_over_time(pai_gpu_memory_total_bytes[{window}])"),
        "energy": on_held(f"increase(pai_gpu_energy_joules_total[{window}])"),
        "memory_peak": f"max by (instance, minor_number) (max_over_time(task_gpu_memory_bytes{{{task}}}[{window}]))",
        # the job's own use, from NVML's per-process figures (absent in MIG mode and on older exporters)
        "own_sm": f"sum by (instance, minor_number) (avg_over_time(task_gpu_sm_utilization_ratio{{{task}}}[{window}]))",
        "own_idle_share": f"min by (instance, minor_number) (avg_over_time({OWN_IDLE_RULE}{{{task}}}[{window}]))",
        "own_energy": f"sum by (instance, minor_number) (increase(task_gpu_energy_joules_total{{{task}}}[{window}]))",
        "held": held,
    }


def per_job(task: str, window: str, step: str) -> dict[str, str]:
    """One query per figure of the whole job (all its tasks), over the window."""
    return {
        "cpu_seconds": f"sum(increase(task_cpu_seconds_total{{{task}}}[{window}]))",
        "cpu_peak_percent": f"max_over_time(sum(task_cpu_percent{{{task}}})[{window}:{step}])",
        "memory_peak": f"max_over_time(sum(task_mem_usage_byte{{{task}}})[{window}:{step}])",
        "memory_limit": f"max_over_time(sum(task_mem_limit_byte{{{task}}})[{window}:{step}])",
    }
