"""A report as text for a person, or as JSON for a script (the same figures, in base units)."""

from __future__ import annotations

import json
import time
from typing import Any

from pai_monitoring.jobstats.report import Report

GIB = 1 << 30
MIB = 1 << 20


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100)} %"


def _gib(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / MIB:.0f} MiB"


def _energy(joules: float | None) -> str:
    if joules is None:
        return "-"
    if joules >= 3.6e6:
        return f"{joules / 3.6e6:.2f} kWh"
    return f"{joules / 1000:.1f} kJ"


def text(report: Report) -> str:
    job = report.job
    lines = [
        f"Job {job.job_name}"
        + (f" of {job.username}" if job.username else "")
        + f": {job.tasks} task(s) on {', '.join(job.nodes)}",
        f"Ran from {_when(job.start)} to {_when(job.end)} ({_duration(job.seconds)}, as Prometheus saw it)",
        "",
        f"GPUs: {len(report.gpus)} held, {report.gpus_used} used (idle means no kernel ran, utilisation under 1 %)",
    ]
    if report.gpus:
        header = (
            "GPU",
            "node",
            "UUID",
            "utilisation",
            "own use",
            "idle",
            "SM active",
            "tensor",
            "memory peak",
            "energy",
        )
        rows = [header]
        for gpu in report.gpus:
            memory = _gib(gpu.memory_peak_bytes)
            if gpu.memory_total_bytes:
                memory += f" / {_gib(gpu.memory_total_bytes)}"
            rows.append(
                (
                    gpu.index or gpu.minor_number,
                    gpu.node_name or gpu.instance,
                    gpu.uuid or "-",
                    "-" if gpu.utilization_percent is None else f"{round(gpu.utilization_percent)} %",
                    _share(gpu.own_use),
                    _share(gpu.idle_share),
                    _share(gpu.sm_active),
                    _share(gpu.tensor_active),
                    memory,
                    _energy(gpu.energy_joules),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        lines.append(
            "  (utilisation, SM active and tensor: the whole GPU, with any job sharing it; own use: the job's own "
            "processes; SM active and tensor need NVML GPM, Hopper and newer; '-' where there is no figure)"
        )
    lines.append("")
    mean = report.cpu_mean_cores
    cpu = "CPU: -" if mean is None else f"CPU: {mean:.1f} cores busy on average"
    if report.cpu_peak_cores is not None:
        cpu += f", {report.cpu_peak_cores:.1f} at the peak"
    if report.cpu_efficiency is not None:
        cpu += f"; {_share(report.cpu_efficiency)} of the {report.cpus:g} cores given"
    lines.append(cpu)
    memory = f"Host memory: peak {_gib(report.host_memory_peak_bytes)}"
    if report.host_memory_limit_bytes:
        memory += f" of a {_gib(report.host_memory_limit_bytes)} limit"
        if report.host_memory_peak_bytes is not None:
            memory += f" ({_share(report.host_memory_peak_bytes / report.host_memory_limit_bytes)})"
    lines.append(memory)
    whose = (
        "the job's share of each GPU's"
        if report.energy_is_share
        else "whole GPUs: a GPU shared with other jobs counts in full"
    )
    lines.append(f"GPU energy: {_energy(report.gpu_energy_joules)} ({whose})")
    lines.append("")
    if report.hints:
        lines.append("Hints:")
        lines += [f"- {hint}" for hint in report.hints]
    else:
        lines.append("Hints: none, the job used what it held.")
    return "\n".join(lines) + "\n"


def as_json(report: Report) -> str:
    job = report.job
    data: dict[str, Any] = {
        "job": {
            "query": job.ident,
            "job_name": job.job_name,
            "username": job.username,
            "nodes": list(job.nodes),
            "tasks": job.tasks,
            "start": job.start,
            "end": job.end,
            "seconds": job.seconds,
        },
        "gpus": {
            "held": len(report.gpus),
            "used": report.gpus_used,
            "energy_joules": report.gpu_energy_joules,
            "devices": [
                {
                    "instance": gpu.instance,
                    "node_name": gpu.node_name,
                    "minor_number": gpu.minor_number,
                    "index": gpu.index,
                    "uuid": gpu.uuid,
                    "model": gpu.model,
                    "utilization_ratio": None if gpu.utilization_percent is None else gpu.utilization_percent / 100,
                    "own_use_ratio": gpu.own_use,
                    "idle_ratio": gpu.idle_share,
                    "card_idle_ratio": gpu.card_idle_share,
                    "sm_active_ratio": gpu.sm_active,
                    "tensor_active_ratio": gpu.tensor_active,
                    "memory_peak_bytes": gpu.memory_peak_bytes,
                    "memory_total_bytes": gpu.memory_total_bytes,
                    "energy_joules": gpu.energy_joules,
                    "energy_is_share": gpu.own_energy_joules is not None,
                }
                for gpu in report.gpus
            ],
        },
        "cpu": {
            "core_seconds": report.cpu_core_seconds,
            "mean_cores": report.cpu_mean_cores,
            "peak_cores": report.cpu_peak_cores,
            "cores_given": report.cpus,
            "efficiency_ratio": report.cpu_efficiency,
        },
        "host_memory": {"peak_bytes": report.host_memory_peak_bytes, "limit_bytes": report.host_memory_limit_bytes},
        "hints": list(report.hints),
    }
    return json.dumps(data, indent=2) + "\n"
