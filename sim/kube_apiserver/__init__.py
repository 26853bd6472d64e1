"""A stand-in for the Kubernetes API server, for the watchdog's tests, benchmark and demo (see README.md)."""

from kube_apiserver.objects import build_node, build_pod, to_json
from kube_apiserver.server import KubeApiStandIn
from kube_apiserver.state import ClusterState, Fault
from kube_apiserver.synthetic import SyntheticCluster

__all__ = ["ClusterState", "Fault", "KubeApiStandIn", "SyntheticCluster", "build_node", "build_pod", "to_json"]
