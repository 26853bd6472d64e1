"""Every target is up and the metrics the original system's users relied on are there, through Prometheus's API."""

from __future__ import annotations

import pytest

from sandbox.sandbox import Sandbox

pytestmark = pytest.mark.e2e

# ../shared/reference/original-design.md, "Metrics used" (Grafana and WebPortal), in the document's order. The
# container_* names come from the rules engineer's legacy recording rules.
DESIGN_METRICS = (
    "node_uname_info",
    "nvidiasmi_utilization_gpu",
    "nvidiasmi_utilization_memory",
    "nvidiasmi_attached_gpus",
    "node_cpu_seconds_total",
    "node_memory_MemTotal_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "container_CPUPerc",
    "container_MemUsage",
    "container_NetIn",
    "container_NetOut",
    "container_BlockIn",
    "container_BlockOut",
    "container_GPUPerc",
    "container_GPUMemPerc",
)

# pai-facts.md §1a: the job-exporter's metrics that a GPU node with running jobs always has.
JOB_EXPORTER_METRICS = (
    "nvidiasmi_utilization_gpu",
    "nvidiasmi_utilization_memory",
    "gpu_utilization",
    "gpu_mem_utilization",
    "nvidiasmi_temperature",
    "nvidiasmi_ecc_error_count",
    "nvidiasmi_memory_leak_count",
    "nvidiasmi_performance_state",
    "task_cpu_percent",
    "task_mem_usage_byte",
    "task_mem_limit_byte",
    "task_mem_usage_percent",
    "task_block_in_byte",
    "task_block_out_byte",
    "task_gpu_percent",
    "task_gpu_mem_percent",
    "collector_iteration_count_total",
)

# pai-facts.md §1a: families that carry samples only while their condition holds (a process outside any job, a
# zombie container, a process in state D, one over 500 MiB RSS, a whitelisted service, a Docker daemon, a GPU
# configuration, network traffic of a job with its own network namespace). They must still be exported: Prometheus
# keeps their HELP/TYPE metadata from the scrape even without a sample.
JOB_EXPORTER_CONDITIONAL = (
    "gpu_used_by_external_process_count",
    "gpu_used_by_zombie_container_count",
    "zombie_process_count",
    "process_mem_usage_byte",
    "task_net_in_byte",
    "task_net_out_byte",
)

# pai-facts.md §2a: the watchdog's families (histograms by their _count series).
WATCHDOG_METRICS = (
    "pai_pod_count",
    "pai_job_pod_count",
    "pai_container_count",
    "pai_node_count",
    "k8s_api_server_count",
    "k8s_node_gpu_total",
    "k8s_node_gpu_available",
    "k8s_node_gpu_reserved",
    "process_error_log_total",
    "k8s_api_healthz_resp_latency_seconds_count",
    "k8s_api_list_pods_latency_seconds_count",
    "k8s_api_list_nodes_latency_seconds_count",
)

SUITE_JOBS = {"node", "pai_job_exporter", "pai_watchdog", "prometheus", "alertmanager"}


def series_count(sandbox: Sandbox, name: str) -> int:
    return len(sandbox.query(f"{{__name__={name!r}}}"))


def test_every_target_of_the_suite_is_up(sandbox: Sandbox) -> None:
    targets = sandbox.targets()
    jobs = {t["labels"]["job"] for t in targets}
    assert jobs >= SUITE_JOBS, f"jobs missing from Prometheus: {SUITE_JOBS - jobs}"
    down = {t["labels"]["instance"]: t.get("lastError") for t in targets if t["health"] != "up"}
    assert not down, f"targets down: {down}"
    gpu_instances = {t["labels"]["instance"] for t in targets if t["labels"]["job"] == "pai_job_exporter"}
    assert gpu_instances == {f"{sandbox.gpu(i).name}:9102" for i in range(sandbox.gpu_nodes)}
    for target in targets:
        service = target["labels"].get("pai_service_name")
        assert service, f"{target['labels']['instance']} has no pai_service_name label"


@pytest.mark.parametrize("name", DESIGN_METRICS)
def test_design_document_metric_has_series(sandbox: Sandbox, name: str) -> None:
    assert series_count(sandbox, name) > 0, f"{name} (original-design.md, Metrics used) returns no series"


@pytest.mark.parametrize("name", JOB_EXPORTER_METRICS)
def test_original_job_exporter_metric_has_series_on_every_gpu_node(sandbox: Sandbox, name: str) -> None:
    result = sandbox.query(f'count by (instance) ({{__name__={name!r}, job="pai_job_exporter"}})')
    instances = {r["metric"]["instance"] for r in result}
    expected = {f"{sandbox.gpu(i).name}:9102" for i in range(sandbox.gpu_nodes)}
    assert instances == expected, f"{name}: series only from {sorted(instances)}"


@pytest.mark.parametrize("name", JOB_EXPORTER_CONDITIONAL)
def test_original_conditional_job_exporter_metric_is_exported(sandbox: Sandbox, name: str) -> None:
    metadata = sandbox.get_json("prometheus", "/api/v1/metadata", {"metric": name})["data"]
    assert name in metadata or series_count(sandbox, name) > 0, f"{name} is neither scraped nor described"


@pytest.mark.parametrize("name", WATCHDOG_METRICS)
def test_original_watchdog_metric_has_series(sandbox: Sandbox, name: str) -> None:
    assert series_count(sandbox, name) > 0, f"{name} (pai-facts.md §2a) returns no series"


def test_jobs_are_attributed_to_their_gpus(sandbox: Sandbox) -> None:
    result = sandbox.query('task_gpu_percent{job_name="alice~resnet50"}')
    gpus = sorted(r["metric"]["minor_number"] for r in result)
    assert gpus == ["0", "1"], f"alice~resnet50 runs on GPUs 0 and 1 of {sandbox.gpu(0).name}, Prometheus has {gpus}"
    assert {r["metric"]["username"] for r in result} == {"alice"}


def test_watchdog_sees_every_node_ready(sandbox: Sandbox) -> None:
    result = sandbox.query("pai_node_count")
    ready = {r["metric"]["node_name"]: r["metric"]["ready"] for r in result}
    for guest in sandbox.guests:
        assert ready.get(guest.name) == "true", f"watchdog reports {ready}"
