"""The situations of the original watchdog's fixtures, served by the API stand-in and read by the real client."""

from __future__ import annotations

import logging

import pytest
from kubernetes import client

from kube_apiserver import ClusterState, build_node, build_pod
from pai_monitoring.watchdog.model import Problems, read_pod
from tests.unit.watchdog.conftest import MakeCollector
from tests.unit.watchdog.helpers import Scrape

NODES = [
    {"name": "node1", "ip": "10.0.0.1", "gpus": 4},
    {"name": "node2", "ip": "10.0.0.2", "gpus": 8, "unschedulable": True},
    {
        "name": "node3",
        "ip": "10.0.0.3",
        "gpus": 4,
        "ready": False,
        "conditions": {"MemoryPressure": True, "PIDPressure": True, "NetworkUnavailable": True},
    },
]


def scrape(make_collector: MakeCollector, **options: object) -> Scrape:
    return Scrape(make_collector(**options).collect())


def test_service_pod_and_its_containers(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES,
            "pods": [
                {
                    "name": "prometheus-0",
                    "namespace": "pai",
                    "labels": {"app": "prometheus"},
                    "node": "node1",
                    "containers": [
                        {"name": "prometheus"},
                        {"name": "reloader", "state": "waiting", "reason": "CrashLoopBackOff", "ready": False},
                    ],
                    "ready": False,
                }
            ],
        }
    )
    result = scrape(make_collector)
    pod = result.one("pai_pod_count", name="prometheus-0")
    assert pod.labels == {
        "service_name": "prometheus",
        "name": "prometheus-0",
        "namespace": "pai",
        "phase": "running",
        "host_ip": "10.0.0.1",
        "node_name": "node1",
        "initialized": "true",
        "pod_scheduled": "true",
        "ready": "false",
    }
    assert result.one("pai_container_count", name="prometheus").labels["state"] == "running"
    reloader = result.one("pai_container_count", name="reloader")
    assert (reloader.labels["state"], reloader.labels["ready"], reloader.labels["pod_name"]) == (
        "waiting",
        "false",
        "prometheus-0",
    )
    assert result.find("pai_job_pod_count") == []


def test_pod_without_conditions_reports_unknown(cluster: ClusterState, make_collector: MakeCollector) -> None:
    pod = client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(name="fresh", namespace="default", labels={"app": "rest-server"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]),
        status=client.V1PodStatus(phase="Pending"),
    )
    no_phase = client.V1Pod(
        metadata=client.V1ObjectMeta(name="blank", namespace="default", labels={"app": "webportal"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]),
    )
    cluster.set_objects(nodes=[build_node(NODES[0])], pods=[pod, no_phase])
    result = scrape(make_collector)
    fresh = result.one("pai_pod_count", name="fresh").labels
    assert (fresh["phase"], fresh["initialized"], fresh["pod_scheduled"], fresh["ready"]) == (
        "pending",
        "unknown",
        "unknown",
        "unknown",
    )
    assert fresh["host_ip"] == "unscheduled"
    assert result.one("pai_pod_count", name="blank").labels["phase"] == "unknown"
    assert result.errors("parse") == 0


def test_pending_job_pods_bound_and_unbound(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES,
            "pods": [
                {
                    "name": "job-a-0",
                    "labels": {"jobName": "job-a"},
                    "phase": "Pending",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available",
                },
                {
                    "name": "job-b-0",
                    "labels": {"jobName": "job-b"},
                    "node": "node1",
                    "phase": "Pending",
                    "containers": [{"name": "w", "state": "waiting", "reason": "ContainerCreating"}],
                },
                {"name": "both-0", "labels": {"jobName": "x", "app": "svc"}, "node": "node1"},
                {"name": "neither", "labels": {"team": "x"}, "node": "node1"},
            ],
        }
    )
    result = scrape(make_collector)
    unbound = result.one("pai_job_pod_count", name="job-a-0").labels
    assert (
        unbound["job_name"],
        unbound["phase"],
        unbound["pod_bound"],
        unbound["host_ip"],
        unbound["pod_scheduled"],
    ) == ("job-a", "pending", "false", "unscheduled", "false")
    bound = result.one("pai_job_pod_count", name="job-b-0").labels
    assert (bound["pod_bound"], bound["node_name"], bound["host_ip"]) == ("true", "node1", "10.0.0.1")
    # a pod with both labels is a service pod only, one with neither is not reported
    assert result.find("pai_job_pod_count", name="both-0") == []
    assert result.one("pai_pod_count", name="both-0").labels["service_name"] == "svc"
    assert not [s for s in result.samples if s.labels.get("name") == "neither"]


def test_waiting_and_terminated_containers(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES[:1],
            "pods": [
                {
                    "name": "svc-0",
                    "labels": {"app": "svc"},
                    "node": "node1",
                    "ready": False,
                    "containers": [
                        {"name": "oom", "state": "terminated", "reason": "OOMKilled", "exit_code": 137},
                        {"name": "pull", "state": "waiting", "reason": "ImagePullBackOff"},
                        {"name": "odd", "state": "none"},
                    ],
                }
            ],
        }
    )
    result = scrape(make_collector)
    states = {s.labels["name"]: s.labels["state"] for s in result.find("pai_container_count")}
    assert states == {"oom": "terminated", "pull": "waiting", "odd": "unknown"}
    assert result.errors("unexpected_container_state") == 1


def test_job_containers_have_series_only_while_something_is_wrong(
    cluster: ClusterState, make_collector: MakeCollector
) -> None:
    """A healthy job container costs no series; a failing one has its state, restarts and last termination."""
    job = {"labels": {"jobName": "alice~bert", "userName": "alice"}, "node": "node1"}
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES[:1],
            "pods": [
                {**job, "name": "healthy", "containers": [{"name": "main"}, {"name": "sidecar"}]},
                {**job, "name": "done", "phase": "Succeeded", "ready": False,
                 "containers": [{"name": "main", "state": "terminated", "reason": "Completed", "exit_code": 0}]},
                {**job, "name": "starting", "ready": False, "containers": [{"name": "main", "ready": False}]},
                {**job, "name": "creating", "phase": "Pending", "ready": False,
                 "containers": [{"name": "main", "state": "waiting", "reason": "ContainerCreating"}]},
                {**job, "name": "failed", "phase": "Failed", "ready": False,
                 "containers": [{"name": "main", "state": "terminated", "reason": "Error", "exit_code": 3}]},
                {**job, "name": "looping", "ready": False,
                 "containers": [{"name": "main", "state": "waiting", "reason": "CrashLoopBackOff", "restarts": 5,
                                 "last_reason": "Error", "last_exit_code": 1}]},
                {**job, "name": "recovered", "containers": [{"name": "main", "restarts": 1, "last_reason": "OOMKilled",
                                                             "last_exit_code": 137}]},
                # the kubelet lost the container: a last termination without a time
                {**job, "name": "lost", "containers": [{"name": "main", "restarts": 1,
                                                        "last_reason": "ContainerStatusUnknown",
                                                        "last_exit_code": 137, "last_finished_at": None}]},
            ],
        }
    )  # fmt: skip
    result = scrape(make_collector)
    assert len(result.find("pai_job_pod_count")) == 8
    status = {s.labels["pod_name"]: (s.labels["state"], s.labels["reason"], s.labels["exit_code"])
              for s in result.find("pai_job_container_status")}  # fmt: skip
    assert status == {
        "starting": ("running", "", ""),  # running, not ready yet
        "creating": ("waiting", "ContainerCreating", ""),
        "failed": ("terminated", "Error", "3"),
        "looping": ("waiting", "CrashLoopBackOff", ""),
    }
    assert {s.labels["pod_name"]: s.value for s in result.find("pai_job_container_restarts_total")} == {
        "looping": 5,
        "recovered": 1,
        "lost": 1,
    }
    last = {s.labels["pod_name"]: (s.labels["reason"], s.labels["exit_code"], s.value)
            for s in result.find("pai_job_container_last_terminated_timestamp_seconds")}  # fmt: skip
    created = 1767225600.0  # the stand-in's default time of a last termination: 2026-01-01T00:00:00Z
    assert last == {"looping": ("Error", "1", created), "recovered": ("OOMKilled", "137", created)}
    for sample in result.find("pai_job_container_status"):
        assert (sample.labels["job_name"], sample.labels["username"], sample.labels["node_name"]) == (
            "alice~bert",
            "alice",
            "node1",
        )


def test_nodes_conditions_and_cordon(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario({"token": "watchdog-test-token", "nodes": NODES})
    result = scrape(make_collector)
    assert result.one("pai_node_count", node_name="node1").labels == {
        "host_ip": "10.0.0.1",
        "node_name": "node1",
        "disk_pressure": "false",
        "memory_pressure": "false",
        "pid_pressure": "false",
        "network_unavailable": "false",
        "ready": "true",
        "unschedulable": "false",
    }
    assert result.one("pai_node_count", node_name="node2").labels["unschedulable"] == "true"
    sick = result.one("pai_node_count", node_name="node3").labels
    assert (sick["ready"], sick["memory_pressure"], sick["pid_pressure"], sick["network_unavailable"]) == (
        "false",
        "true",
        "true",
        "true",
    )


def test_node_without_internal_ip_or_conditions(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": [
                {"name": "bare", "conditions": "none"},
                {"name": "npd", "ip": "10.0.0.9", "conditions": {"KernelDeadlock": False}},
            ],
        }
    )
    result = scrape(make_collector)
    bare = result.one("pai_node_count", node_name="bare").labels
    assert (bare["host_ip"], bare["ready"], bare["disk_pressure"]) == ("bare", "unknown", "unknown")
    assert result.value("k8s_node_gpu_total", host_ip="bare") == 0
    assert result.errors("unknown_node_cond") == 1


def test_gpu_accounting_sums_every_container(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES[:2],
            "pods": [
                # two containers: 1 + 2 GPUs (the original Go watchdog counted only the last one)
                {
                    "name": "j1",
                    "labels": {"jobName": "j"},
                    "node": "node1",
                    "containers": [{"name": "a", "gpus": 1}, {"name": "b", "gpus": 2}],
                },
                # finished pods hold nothing
                {
                    "name": "done",
                    "labels": {"jobName": "j"},
                    "node": "node1",
                    "phase": "Succeeded",
                    "containers": [{"name": "a", "gpus": 4, "state": "terminated"}],
                },
                {
                    "name": "cordoned-user",
                    "labels": {"jobName": "k"},
                    "node": "node2",
                    "containers": [{"name": "a", "gpus": 3}],
                },
            ],
        }
    )
    result = scrape(make_collector)
    assert result.value("k8s_node_gpu_total", host_ip="10.0.0.1") == 4
    assert result.value("k8s_node_gpu_available", host_ip="10.0.0.1") == 1
    assert result.value("k8s_node_gpu_reserved", host_ip="10.0.0.1") == 0
    # cordoned: nothing available to the scheduler, the free GPUs are "reserved"
    assert result.value("k8s_node_gpu_available", host_ip="10.0.0.2") == 0
    assert result.value("k8s_node_gpu_reserved", host_ip="10.0.0.2") == 5


def test_gpu_accounting_init_containers_and_sidecars(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": [{"name": "big", "ip": "10.0.1.1", "gpus": 16}],
            "pods": [
                # init containers run before the app: effective = max(app 1, init peak 4) = 4
                {
                    "name": "init",
                    "labels": {"jobName": "j"},
                    "node": "big",
                    "init_containers": [{"name": "warmup", "gpus": 4, "state": "terminated"}],
                    "containers": [{"name": "a", "gpus": 1}],
                },
                # a sidecar (restartable init container) runs alongside: 2 + app 1 = 3
                {
                    "name": "sidecar",
                    "labels": {"jobName": "j"},
                    "node": "big",
                    "init_containers": [{"name": "proxy", "gpus": 2, "restart_policy": "Always"}],
                    "containers": [{"name": "a", "gpus": 1}],
                },
                # request only (limit absent) counts too
                {
                    "name": "req",
                    "labels": {"jobName": "j"},
                    "node": "big",
                    "containers": [{"name": "a", "gpu_requests": 2}],
                },
            ],
        }
    )
    result = scrape(make_collector)
    assert result.value("k8s_node_gpu_available", host_ip="10.0.1.1") == 16 - 4 - 3 - 2


@pytest.mark.parametrize(
    ("resources", "expected_total"),
    [(("nvidia.com/gpu",), 4), (("amd.com/gpu",), 2), (("nvidia.com/gpu", "nvidia.com/mig-1g.10gb"), 11)],
)
def test_gpu_resource_names_are_configurable(
    cluster: ClusterState, make_collector: MakeCollector, resources: tuple[str, ...], expected_total: int
) -> None:
    mig = build_node({"name": "mig", "ip": "10.0.2.1", "gpus": 7, "gpu_resource": "nvidia.com/mig-1g.10gb"})
    amd = build_node({"name": "amd", "ip": "10.0.2.2", "gpus": 2, "gpu_resource": "amd.com/gpu"})
    nvidia = build_node({"name": "nv", "ip": "10.0.2.3", "gpus": 4})
    mig_pod = build_pod(
        {
            "name": "m",
            "labels": {"jobName": "j"},
            "node": "mig",
            "gpu_resource": "nvidia.com/mig-1g.10gb",
            "containers": [{"name": "a", "gpus": 3}],
        }
    )
    cluster.set_objects(nodes=[mig, amd, nvidia], pods=[mig_pod])
    result = scrape(make_collector, gpu_resources=resources)
    assert sum(s.value for s in result.find("k8s_node_gpu_total")) == expected_total
    if "nvidia.com/mig-1g.10gb" in resources:
        assert result.value("k8s_node_gpu_available", host_ip="10.0.2.1") == 4


def test_label_keys_are_configurable(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES[:1],
            "pods": [
                {"name": "p", "labels": {"component": "grafana"}, "node": "node1"},
                {"name": "q", "labels": {"volcano.sh/job-name": "train"}, "node": "node1"},
            ],
        }
    )
    result = scrape(make_collector, service_label="component", job_label="volcano.sh/job-name")
    assert result.one("pai_pod_count").labels["service_name"] == "grafana"
    assert result.one("pai_job_pod_count").labels["job_name"] == "train"


def test_unknown_pod_condition_and_malformed_item_are_counted(
    cluster: ClusterState, make_collector: MakeCollector
) -> None:
    odd = build_pod(
        {"name": "gated", "labels": {"app": "svc"}, "node": "node1", "conditions": {"example.com/Gate": True}}
    )
    cluster.set_objects(nodes=[build_node(NODES[0])], pods=[odd, {"kind": "Pod", "metadata": {"namespace": "x"}}])
    result = scrape(make_collector)
    assert result.errors("unknown_pod_cond") == 1
    assert result.errors("parse") == 1
    assert result.one("pai_pod_count").labels["name"] == "gated"
    assert result.api_error() == "ok"


def test_every_error_type_is_always_emitted(cluster: ClusterState, make_collector: MakeCollector) -> None:
    result = scrape(make_collector)
    assert {s.labels["type"] for s in result.find("process_error_log_total")} == {
        "parse",
        "unknown_pod_cond",
        "unknown_node_cond",
        "healthz",
        "unexpected_container_state",
        "api",
    }
    assert result.api_error() == "ok"


def test_histograms_have_the_right_names_and_accumulate(cluster: ClusterState, make_collector: MakeCollector) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES,
            "pods": [{"name": f"p{i}", "labels": {"jobName": "j"}} for i in range(7)],
        }
    )
    collector = make_collector(page_size=3)
    collector.collect()
    result = Scrape(collector.collect())
    # 7 pods in pages of 3 = 3 requests per collection; 3 nodes = 1 page (+1 empty page is not requested)
    assert result.value("k8s_api_list_pods_latency_seconds_count") == 6
    assert result.value("k8s_api_list_nodes_latency_seconds_count") == 2
    assert result.value("k8s_api_healthz_resp_latency_seconds_count") == 2
    buckets = result.find("k8s_api_list_pods_latency_seconds_bucket")
    assert buckets[-1].labels["le"] == "+Inf"
    assert float(buckets[-2].labels["le"]) == 2.0  # the request timeout is the last finite bound


def test_unhealthy_objects_are_logged_one_line_each(
    cluster: ClusterState, make_collector: MakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.load_scenario(
        {
            "token": "watchdog-test-token",
            "nodes": NODES,
            "pods": [
                {"name": "ok", "labels": {"app": "svc"}, "node": "node1"},
                {
                    "name": "stuck",
                    "labels": {"jobName": "j"},
                    "phase": "Pending",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu",
                },
                {
                    "name": "crash",
                    "labels": {"app": "svc"},
                    "node": "node1",
                    "ready": False,
                    "containers": [{"name": "main", "state": "waiting", "reason": "CrashLoopBackOff", "restarts": 5}],
                },
            ],
        }
    )
    with caplog.at_level(logging.INFO, logger="pai_monitoring.watchdog"):
        make_collector().collect()
    lines = [r.getMessage() for r in caplog.records]
    pods = [line for line in lines if line.startswith("unhealthy_pod ")]
    assert len(pods) == 2
    assert any(
        "pod=stuck" in line
        and "phase=pending" in line
        and "reason=Unschedulable" in line
        and 'message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu"' in line
        for line in pods
    )
    containers = [line for line in lines if line.startswith("unhealthy_container ")]
    assert containers == [
        "unhealthy_container namespace=default pod=crash container=main state=waiting ready=false "
        "reason=CrashLoopBackOff exit_code= restarts=5 node=node1"
    ]
    nodes = sorted(line.split()[1] for line in lines if line.startswith("unhealthy_node "))
    assert nodes == ["node=node2", "node=node3"]
    assert any(line.startswith("collection pods=3 nodes=3 unhealthy_pods=2") for line in lines)


def test_log_lines_are_capped_per_collection(
    cluster: ClusterState, make_collector: MakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.load_scenario(
        {"token": "watchdog-test-token", "pods": [{"name": f"p{i}", "labels": {"jobName": "j"}} for i in range(12)]}
    )
    with caplog.at_level(logging.INFO, logger="pai_monitoring.watchdog"):
        make_collector(log_limit=5).collect()
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if line.startswith("unhealthy_pod ")]) == 5
    assert any(line.startswith("unhealthy_not_logged containers=0 nodes=0 pods=7") for line in lines)


@pytest.mark.parametrize(
    ("finished_at", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),  # as the API sends it
        ("2026-01-01T01:00:00+01:00", 1767225600.0),
        ("2026-01-01T00:00:00", 1767225600.0),  # no zone: taken as UTC, as the API means it
        (None, None),  # ContainerStatusUnknown: the kubelet recorded no time
        ("yesterday", None),
    ],
)
def test_last_termination_time_is_read_from_finished_at(finished_at: str | None, expected: float | None) -> None:
    last: dict[str, object] = {"exitCode": 137, "reason": "OOMKilled"}
    if finished_at is not None:
        last["finishedAt"] = finished_at
    raw = {
        "metadata": {"name": "p", "namespace": "default", "labels": {"jobName": "j"}},
        "status": {
            "containerStatuses": [
                {"name": "main", "restartCount": 1, "state": {"running": {}}, "lastState": {"terminated": last}}
            ]
        },
    }
    pod = read_pod(raw, ("nvidia.com/gpu",), "app", "jobName", Problems())
    assert pod is not None
    (container,) = pod.containers
    assert (container.last_reason, container.last_exit_code, container.last_finished) == ("OOMKilled", 137, expected)
