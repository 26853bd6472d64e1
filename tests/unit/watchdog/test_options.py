"""Credential sources and option checks: a bad configuration stops pai-watchdog before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kube_apiserver import ClusterState, KubeApiStandIn
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.options import build_options
from pai_monitoring.watchdog import client as watchdog_client
from pai_monitoring.watchdog import options as watchdog_options
from pai_monitoring.watchdog.collector import KubernetesCollector
from pai_monitoring.watchdog.options import KubernetesOptions
from tests.unit.watchdog.conftest import TOKEN
from tests.unit.watchdog.helpers import Scrape


def kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "watchdog", "user": {"token": token}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "watchdog"}}],
                "current-context": "ctx",
            }
        ),
        encoding="utf-8",
    )
    return path


def build(**flags: object) -> KubernetesOptions:
    options = build_options("kubernetes", KubernetesOptions, flags, {})
    assert isinstance(options, KubernetesOptions)
    return options


def test_defaults_keep_tls_on_and_collect_every_30_seconds(token_file: Path) -> None:
    options = build(api_url="https://10.0.0.1:6443", token_file=str(token_file))
    assert options.interval == 30
    assert options.insecure_skip_tls_verify is False
    assert options.page_size == 500
    assert options.gpu_resources == ("nvidia.com/gpu",)
    configuration = watchdog_client.build_configuration(options)
    assert configuration.verify_ssl is True


@pytest.mark.parametrize(
    ("interval", "timeout", "request_timeout", "expiry"),
    [(30, 60, 10, 180), (2, 5, 4, 14), (0.5, 2, 2, 5.5)],
    ids=["defaults", "slow-collection", "slow-api-server"],
)
def test_the_default_expiry_outlasts_a_slow_collection_and_a_failing_slow_api_server(
    token_file: Path, interval: float, timeout: float, request_timeout: float, expiry: float
) -> None:
    """Two cycles of interval + timeout (a healthy but slow collection never expires), and never less than a
    collection failing on a slow API server takes (interval + 2 x request-timeout + 1)."""
    options = build(
        api_url="https://10.0.0.1:6443",
        token_file=str(token_file),
        interval=str(interval),
        timeout=str(timeout),
        request_timeout=str(request_timeout),
    )
    assert options.effective_expiry == expiry  # with the defaults: not 60 s, shorter than one 90 s cycle


@pytest.mark.parametrize(
    ("flags", "flag", "words"),
    [
        ({}, "--collector.kubernetes.kubeconfig", "exactly one credential source"),
        ({"in_cluster": "true", "api_url": "https://x"}, "--collector.kubernetes.api-url", "found in-cluster, api-url"),
        ({"api_url": "https://x"}, "--collector.kubernetes.token-file", "needs a bearer-token file"),
        ({"api_url": "x:6443", "token_file": "TOKEN"}, "--collector.kubernetes.api-url", "not an http(s) URL"),
        (
            {"api_url": "https://x", "token_file": "/nonexistent/token"},
            "--collector.kubernetes.token-file",
            "does not exist",
        ),
        (
            {"api_url": "https://x", "token_file": "TOKEN", "ca_file": "/nonexistent/ca"},
            "--collector.kubernetes.ca-file",
            "does not exist",
        ),
        ({"kubeconfig": "/nonexistent/kubeconfig"}, "--collector.kubernetes.kubeconfig", "does not exist"),
        ({"kubeconfig": "TOKEN"}, "--collector.kubernetes.kubeconfig", "not a kubeconfig"),
        ({"kubeconfig": "KUBECONFIG", "token_file": "TOKEN"}, "--collector.kubernetes.token-file", "only used with"),
        ({"in_cluster": "true"}, "--collector.kubernetes.in-cluster", "not running in a pod"),
        (
            {"api_url": "https://x", "token_file": "TOKEN", "request_timeout": "90"},
            "--collector.kubernetes.request-timeout",
            "must not exceed",
        ),
        (
            {"api_url": "https://x", "token_file": "TOKEN", "page_size": "0"},
            "--collector.kubernetes.page-size",
            "between 1 and",
        ),
        (
            {"api_url": "https://x", "token_file": "TOKEN", "gpu_resources": ""},
            "--collector.kubernetes.gpu-resources",
            "at least one",
        ),
    ],
)
def test_invalid_configuration_names_the_flag(
    tmp_path: Path, token_file: Path, monkeypatch: pytest.MonkeyPatch, flags: dict[str, str], flag: str, words: str
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config_path = kubeconfig(tmp_path / "kubeconfig", "https://10.0.0.1:6443")
    replace = {"TOKEN": str(token_file), "KUBECONFIG": str(config_path)}
    with pytest.raises(ConfigError) as raised:
        build(**{k: replace.get(v, v) for k, v in flags.items()})
    assert raised.value.flag == flag
    assert words in raised.value.problem


def test_kubeconfig_credentials_reach_the_api(cluster: ClusterState, apiserver: KubeApiStandIn, tmp_path: Path) -> None:
    cluster.load_scenario({"token": TOKEN, "nodes": [{"name": "n1", "ip": "10.0.0.1"}]})
    options = build(kubeconfig=str(kubeconfig(tmp_path / "kubeconfig", apiserver.url)))
    collector = KubernetesCollector(options, CollectorContext())
    try:
        result = Scrape(collector.collect())
    finally:
        collector.close()
    assert result.api_error() == "ok"
    assert result.one("k8s_api_server_count").labels["url"] == apiserver.url
    assert result.one("pai_node_count").labels["node_name"] == "n1"


def test_in_cluster_service_account_configures_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "sa-token"
    token_file.write_text(TOKEN, encoding="utf-8")  # the kubelet writes it without a newline
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(watchdog_options, "IN_CLUSTER_TOKEN", token_file)
    monkeypatch.setattr(watchdog_client, "IN_CLUSTER_TOKEN", token_file)
    monkeypatch.setattr(watchdog_client, "IN_CLUSTER_CA", ca)
    configuration = watchdog_client.build_configuration(build(in_cluster="true"))
    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.ssl_ca_cert == str(ca)
    assert configuration.verify_ssl is True
    header = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert str(header).lower() == f"bearer {TOKEN}"
