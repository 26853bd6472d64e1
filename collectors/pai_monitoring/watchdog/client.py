"""The thin adapter between the watchdog and the Kubernetes API: credentials, health check and paginated lists.

It uses the official ``kubernetes`` client for everything (configuration loading, authentication, TLS, the list
calls), but asks for the raw response body and decodes it with ``json``: turning 150,000 pods into client model
objects would cost seconds and gigabytes the watchdog does not need. Each request carries ``_request_timeout``; the
client's own retries are switched off, so a timeout costs one timeout, not four.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

from pai_monitoring.watchdog import errors
from pai_monitoring.watchdog.errors import ApiFailure
from pai_monitoring.watchdog.options import IN_CLUSTER_CA, IN_CLUSTER_TOKEN, KubernetesOptions

log = logging.getLogger(__name__)

LatencyObserver = Callable[[str, float], None]
"""Called with (``"healthz"``, ``"pods"`` or ``"nodes"``, seconds) after every request, failed ones included."""


def build_configuration(options: KubernetesOptions) -> client.Configuration:
    """A client configuration from exactly one credential source; TLS verification stays on unless told."""
    configuration = client.Configuration()
    if options.kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(options.kubeconfig), client_configuration=configuration, persist_config=False
        )
    elif options.in_cluster:
        loader = InClusterConfigLoader(token_filename=str(IN_CLUSTER_TOKEN), cert_filename=str(IN_CLUSTER_CA))  # type: ignore[no-untyped-call]
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    else:
        configuration.host = str(options.api_url).rstrip("/")
        if options.ca_file is not None:
            configuration.ssl_ca_cert = str(options.ca_file)
    if str(configuration.host).startswith("http://"):
        log.warning("the API server URL %s is plain HTTP: the bearer token travels unencrypted", configuration.host)
    if options.insecure_skip_tls_verify:
        log.warning("TLS verification of the API server is off (insecure-skip-tls-verify): do not use in production")
        configuration.verify_ssl = False
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    configuration.retries = urllib3.util.Retry(total=0, redirect=False, raise_on_status=False)
    return configuration


class KubeApi:
    """The API calls the watchdog makes. Every method raises :class:`ApiFailure` on any failure."""

    def __init__(self, options: KubernetesOptions, observe: LatencyObserver | None = None) -> None:
        self.options = options
        self.configuration = build_configuration(options)
        self.api_client = client.ApiClient(self.configuration)
        self.core = client.CoreV1Api(self.api_client)
        self._observe = observe or (lambda kind, seconds: None)
        self._health_path = "/readyz"

    @property
    def host(self) -> str:
        """The API server URL, the ``host_ip`` label of ``k8s_api_server_count`` (as in the original)."""
        return str(self.configuration.host)

    def refresh_token(self) -> None:
        """Re-read ``token-file`` (tokens rotate); a missing or empty file is a ``credentials_error`` failure."""
        if self.options.token_file is None:
            return
        try:
            token = self.options.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiFailure(errors.CREDENTIALS, "token", f"cannot read {self.options.token_file}: {exc}") from None
        if not token:
            raise ApiFailure(errors.CREDENTIALS, "token", f"{self.options.token_file} is empty")
        self.configuration.api_key = {"authorization": token}
        self.configuration.api_key_prefix = {"authorization": "Bearer"}

    def _timed(self, kind: str, call: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return call()
        except ApiFailure:
            raise
        except Exception as exc:
            raise ApiFailure(errors.classify(exc), kind, _describe(exc)) from exc
        finally:
            self._observe(kind, time.monotonic() - start)

    def check_health(self) -> None:
        """``GET /readyz``, or ``/healthz`` on servers without it (they answer 404); "ok" means healthy."""
        try:
            self._timed("healthz", functools.partial(self._get_text, self._health_path))
        except ApiFailure as failure:
            if failure.reason != "http_404" or self._health_path != "/readyz":
                raise
            log.info("API server has no /readyz; using /healthz")
            self._health_path = "/healthz"
            self._timed("healthz", functools.partial(self._get_text, self._health_path))

    def _get_text(self, path: str) -> None:
        method, url, headers, _, _ = self.api_client.param_serialize(
            "GET", path, header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
        )
        response = self.api_client.call_api(method, url, headers, _request_timeout=self.options.request_timeout)
        body = response.read() or b""  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=str(response.reason), body=body.decode(errors="replace"))
        if body.strip() != b"ok":
            raise ApiFailure(errors.MALFORMED, "healthz", f"{path} answered {body[:60]!r} instead of 'ok'")

    def list_pages(self, kind: str) -> Iterator[list[dict[str, Any]]]:
        """The items of ``pods`` (all namespaces) or ``nodes``, one page (``page-size`` objects) at a time."""
        for items, _version in self.list_pages_versioned(kind):
            yield items

    def list_pages_versioned(self, kind: str) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Like :meth:`list_pages`, each page with the list's ``resourceVersion`` (where a watch takes over)."""
        call = self.core.list_pod_for_all_namespaces if kind == "pods" else self.core.list_node
        token: str | None = None
        while True:
            page = self._timed(kind, functools.partial(self._get_page, call, token, kind))
            items = page.get("items")
            metadata = page.get("metadata")
            if not isinstance(items, list) or not isinstance(metadata, dict):
                raise ApiFailure(errors.MALFORMED, kind, "list without items or metadata")
            yield items, str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if token is None:
                return

    def open_watch(self, kind: str, resource_version: str, timeout_seconds: int, idle_timeout: float) -> Any:
        """Start a watch of ``pods`` or ``nodes`` after ``resource_version``, with bookmarks; the raw response.

        The server ends the stream after ``timeout_seconds``; ``idle_timeout`` bounds every read (no byte for that
        long is a timeout), so a dead connection cannot hold the reader. Reading is the caller's (the informer).
        """
        call = self.core.list_pod_for_all_namespaces if kind == "pods" else self.core.list_node
        try:
            return call(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=(self.options.request_timeout, idle_timeout),
            )
        except Exception as exc:
            raise ApiFailure(errors.classify(exc), kind, _describe(exc)) from exc

    def _get_page(self, call: Callable[..., Any], token: str | None, kind: str) -> dict[str, Any]:
        response = call(
            limit=self.options.page_size,
            _continue=token,
            _preload_content=False,
            _request_timeout=self.options.request_timeout,
        )
        try:
            body = response.data
        finally:
            response.release_conn()
        try:
            page = json.loads(body)
        except ValueError as exc:
            raise ApiFailure(errors.MALFORMED, kind, f"invalid JSON: {exc}") from None
        if not isinstance(page, dict):
            raise ApiFailure(errors.MALFORMED, kind, f"expected a list object, got {type(page).__name__}")
        return page

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


def _describe(exc: BaseException) -> str:
    """A one-line description for the log (the metric label gets only the reason)."""
    if isinstance(exc, ApiException):
        message = ""
        try:
            body = json.loads(exc.body or "")
            if isinstance(body, dict):
                message = str(body.get("message", ""))
        except ValueError:
            message = (exc.body or "")[:120]
        return f"HTTP {exc.status} {exc.reason}: {message}".strip().rstrip(":")
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:200]}"
