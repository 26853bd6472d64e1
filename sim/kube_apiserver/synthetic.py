"""Large synthetic clusters whose objects are produced on demand, one page at a time.

150,000 pods as client models would take gigabytes in the stand-in, so each kind of pod (running job pod, pending
job pod, crash-looping pod, failed pod, service pod) is built once as a real ``V1Pod``, serialised, and turned into
a text template; item ``i`` is that template with its names and addresses filled in. Nothing is kept per item.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kube_apiserver.objects import CREATED, build_node, build_pod, dumps, to_json

_FIELDS = ("name", "node", "host_ip", "job", "app", "uid", "rv")


def _template(obj: dict[str, Any]) -> str:
    """JSON text of ``obj`` with ``@@field@@`` markers turned into ``%(field)s`` placeholders."""
    text = dumps(obj).replace("%", "%%")
    for name in _FIELDS:
        text = text.replace(f"@@{name}@@", f"%({name})s")
    return text


def _padding() -> dict[str, Any]:
    """Fields real pods carry (env, mounts, tolerations, managed fields) so that items have a realistic size."""
    return {
        "env": [client.V1EnvVar(name=f"PAI_ENV_{k}", value=f"value-{k}-@@job@@") for k in range(12)],
        "volume_mounts": [
            client.V1VolumeMount(name=f"vol-{k}", mount_path=f"/mnt/data{k}", read_only=k % 2 == 0) for k in range(4)
        ],
    }


def _pod_template(spec: dict[str, Any]) -> str:
    pod = build_pod(spec)
    pod_spec, meta = pod.spec, pod.metadata
    if pod_spec is None or meta is None:
        raise TypeError("build_pod returned a pod without spec or metadata")
    for container in pod_spec.containers:
        padding = _padding()
        container.env = padding["env"]
        container.volume_mounts = padding["volume_mounts"]
        container.command = ["/bin/sh", "-c", "python train.py --epochs 100 --data /mnt/data0"]
    pod_spec.tolerations = [
        client.V1Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute"),
        client.V1Toleration(key="node.kubernetes.io/unreachable", operator="Exists", effect="NoExecute"),
    ]
    meta.uid = "@@uid@@"
    meta.resource_version = "@@rv@@"
    meta.annotations = {"pai.example/job-config": "@@job@@:" + "x" * 200}
    meta.owner_references = [
        client.V1OwnerReference(
            api_version="batch/v1", kind="Job", name="@@job@@", uid="owner-@@uid@@", controller=True
        )
    ]
    meta.managed_fields = [
        client.V1ManagedFieldsEntry(
            api_version="v1",
            fields_type="FieldsV1",
            fields_v1={"f:metadata": {"f:labels": {".": {}, "f:jobName": {}}}, "f:spec": {"f:containers": {}}},
            manager="kubelet",
            operation="Update",
            time=CREATED,
        )
    ]
    return _template(to_json(pod))


class SyntheticCluster:
    """``nodes`` nodes and ``pods`` pods, spread round-robin over the nodes, with a fixed mix of pod states.

    The mix (by pod index): every 50th pod is a service pod (label ``app``) with two containers; every 200th is a
    pending job pod that is not scheduled; every 300th has failed; every 150th is crash-looping; the rest are
    running job pods with one GPU each. Every 500th node is NotReady and every 1000th is cordoned.
    """

    def __init__(self, nodes: int, pods: int, gpus_per_node: int = 8, name_prefix: str = "syn") -> None:
        self.nodes = nodes
        self.pods = pods
        self.gpus_per_node = gpus_per_node
        self.name_prefix = name_prefix
        base = {"name": "@@name@@", "node": "@@node@@", "host_ip": "@@host_ip@@"}
        job = {**base, "labels": {"jobName": "@@job@@", "userName": "alice"}}
        templates = {
            "running": _pod_template({**job, "containers": [{"name": "worker", "gpus": 1}]}),
            "pending": _pod_template(
                {
                    "name": "@@name@@",
                    "labels": {"jobName": "@@job@@"},
                    "phase": "Pending",
                    "reason": "Unschedulable",
                    "message": "0/5000 nodes are available: insufficient nvidia.com/gpu",
                    "containers": [{"name": "worker", "gpus": 1}],
                }
            ),
            "failed": _pod_template(
                {
                    **job,
                    "phase": "Failed",
                    "ready": False,
                    "containers": [
                        {"name": "worker", "gpus": 1, "state": "terminated", "reason": "Error", "exit_code": 1}
                    ],
                }
            ),
            "crashloop": _pod_template(
                {
                    **job,
                    "ready": False,
                    "containers": [
                        {
                            "name": "worker",
                            "gpus": 1,
                            "state": "waiting",
                            "reason": "CrashLoopBackOff",
                            "restarts": 7,
                            "last_reason": "Error",
                            "last_exit_code": 1,
                        }
                    ],
                }
            ),
            "service": _pod_template(
                {
                    **base,
                    "namespace": "pai",
                    "labels": {"app": "@@app@@"},
                    "containers": [{"name": "@@app@@"}, {"name": "sidecar"}],
                }
            ),
        }
        self._templates = templates
        self._node_templates = {
            "ok": _template(to_json(build_node({"name": "@@name@@", "ip": "@@host_ip@@", "gpus": self.gpus_per_node}))),
            "notready": _template(
                to_json(
                    build_node({"name": "@@name@@", "ip": "@@host_ip@@", "gpus": self.gpus_per_node, "ready": False})
                )
            ),
            "cordoned": _template(
                to_json(
                    build_node(
                        {"name": "@@name@@", "ip": "@@host_ip@@", "gpus": self.gpus_per_node, "unschedulable": True}
                    )
                )
            ),
        }

    def node_name(self, index: int) -> str:
        return f"{self.name_prefix}-node-{index:05d}"

    @staticmethod
    def node_ip(index: int) -> str:
        return f"10.{128 + ((index >> 16) & 127)}.{(index >> 8) & 255}.{index & 255}"

    def node_json(self, index: int) -> str:
        kind = "notready" if index % 500 == 7 else "cordoned" if index % 1000 == 3 else "ok"
        return self._node_templates[kind] % {"name": self.node_name(index), "host_ip": self.node_ip(index)}

    def pod_kind(self, index: int) -> str:
        if index % 50 == 0:
            return "service"
        if index % 200 == 1:
            return "pending"
        if index % 300 == 2:
            return "failed"
        if index % 150 == 5:
            return "crashloop"
        return "running"

    def pod_namespace(self, index: int) -> str:
        return "pai" if self.pod_kind(index) == "service" else "default"

    def pod_json(self, index: int, kind: str | None = None, resource_version: int = 1) -> str:
        """Pod ``index`` as JSON; ``kind`` (default: its own) and ``resource_version`` for a pod changed since."""
        node = index % self.nodes if self.nodes else 0
        values = {
            "name": f"{self.name_prefix}-pod-{index:06d}",
            "node": self.node_name(node),
            "host_ip": self.node_ip(node),
            "job": f"job-{index // 4:06d}",
            "app": f"service-{index % 20}",
            "uid": f"{index:08x}-0000-4000-8000-000000000000",
            "rv": str(resource_version),
        }
        return self._templates[kind or self.pod_kind(index)] % values
