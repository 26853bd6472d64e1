"""Options of the ``kubernetes`` collector (``--collector.kubernetes.<option>``) and their checks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pai_monitoring.runtime.collector import CollectorOptions
from pai_monitoring.runtime.errors import ConfigError

DEFAULT_INTERVAL_SECONDS = 30.0
"""The original watchdog collected every 180 s; with alerts ``for: 10m`` that left too few samples, so 30 s."""
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
MIN_REQUEST_TIMEOUT_SECONDS = 0.1
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 10_000
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""A page of 500 pods is 2-8 MB of JSON with managed fields; decoded it takes about six times that in memory, so a
16 MiB page costs about 100 MiB at its peak, which the unit's ``MemoryMax`` (768M by default) holds next to the
cache of a large cluster."""
RESPONSE_BYTES_BOUNDS = (64 * 1024, 128 * 1024 * 1024)
DEFAULT_WATCH_TIMEOUT_SECONDS = 300.0
"""The server ends a watch after this (``timeoutSeconds``) and the informer opens the next one where it stopped."""
DEFAULT_WATCH_IDLE_TIMEOUT_SECONDS = 90.0
"""API servers send a bookmark about every minute on a quiet watch; silence well past that means a dead stream."""
DEFAULT_WATCH_MAX_EVENT_BYTES = 4 * 1024**2
"""etcd refuses objects over 1.5 MiB, so no real event comes near this; it bounds what a broken peer makes us buffer."""
MIN_WATCH_MAX_EVENT_BYTES = 64 * 1024
DEFAULT_CACHE_MAX_OBJECTS = 500_000
"""Per kind; Kubernetes' tested limit is 150,000 pods and 5,000 nodes per cluster."""
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
IN_CLUSTER_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


@dataclass(frozen=True)
class KubernetesOptions(CollectorOptions):
    """How to reach the API server and what to count. Exactly one of kubeconfig, in-cluster and api-url is set."""

    interval: float = field(
        default=DEFAULT_INTERVAL_SECONDS,
        metadata={"help": "Seconds between the starts of two collections (the original watchdog used 180)."},
    )
    timeout: float = field(
        default=DEFAULT_TIMEOUT_SECONDS,
        metadata={"help": "Deadline of one collection in seconds (health check plus every list page)."},
    )
    expiry: float | None = field(
        default=None,
        metadata={
            "help": "Seconds after which an old snapshot is dropped instead of served; at least interval + timeout "
            "(default: the larger of 2 x (interval + timeout) and interval + 2 x request-timeout + 1, so that neither "
            "a slow collection nor the error of one failing on a slow API server leaves a gap)."
        },
    )
    kubeconfig: Path | None = field(default=None, metadata={"help": "Kubeconfig file to use (its current context)."})
    in_cluster: bool = field(
        default=False,
        metadata={"help": "Use the pod's service account (KUBERNETES_SERVICE_HOST and the mounted token)."},
    )
    api_url: str | None = field(
        default=None, metadata={"help": "API server URL, e.g. https://10.0.0.1:6443; needs --token-file."}
    )
    token_file: Path | None = field(
        default=None, metadata={"help": "File holding the bearer token (re-read every collection); with api-url."}
    )
    ca_file: Path | None = field(
        default=None,
        metadata={"help": "CA bundle that signed the API server's certificate; with api-url (default: system CAs)."},
    )
    insecure_skip_tls_verify: bool = field(
        default=False, metadata={"help": "Do not verify the API server's certificate (testing only; logs a warning)."}
    )
    request_timeout: float = field(
        default=DEFAULT_REQUEST_TIMEOUT_SECONDS,
        metadata={
            "help": "Wall-clock seconds one API request (connect, TLS, headers and body) may take, however slowly "
            "the server answers; past it the collection reports error=timeout."
        },
    )
    max_response_bytes: int = field(
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metadata={
            "help": "Largest answer one API request may return, in bytes; a bigger one is dropped unread and reported "
            "as error=response_too_large. A page of page-size objects must fit; decoded it takes about six times as "
            "much memory."
        },
    )
    page_size: int = field(
        default=DEFAULT_PAGE_SIZE, metadata={"help": "Objects per list request (the limit/continue page size)."}
    )
    gpu_resources: tuple[str, ...] = field(
        default=("nvidia.com/gpu",),
        metadata={
            "help": "Extended resources counted as GPUs, e.g. nvidia.com/gpu,nvidia.com/mig-1g.10gb,amd.com/gpu."
        },
    )
    service_label: str = field(
        default="app",
        metadata={"help": "Pod label whose presence makes a pod a service pod (its value: service_name)."},
    )
    job_label: str = field(
        default="jobName",
        metadata={"help": "Pod label that makes a pod (without the service label) a job pod (its value: job_name)."},
    )
    user_label: str = field(
        default="userName",
        metadata={"help": "Pod label of a job pod that names the job's owner (its value: username)."},
    )
    log_limit: int = field(
        default=200,
        metadata={"help": "Unhealthy pods, containers and nodes logged per kind and collection; the rest counted."},
    )
    watch: bool = field(
        default=True,
        metadata={
            "help": "List pods and nodes once, then keep a cache current with watch streams (false: list everything "
            "every collection)."
        },
    )
    watch_timeout: float = field(
        default=DEFAULT_WATCH_TIMEOUT_SECONDS,
        metadata={"help": "Seconds one watch request lasts (timeoutSeconds); the next one resumes where it ended."},
    )
    watch_idle_timeout: float = field(
        default=DEFAULT_WATCH_IDLE_TIMEOUT_SECONDS,
        metadata={"help": "Seconds a watch may send nothing (no event, no bookmark) before it is reopened."},
    )
    watch_max_event_bytes: int = field(
        default=DEFAULT_WATCH_MAX_EVENT_BYTES,
        metadata={"help": "Largest watch event accepted, in bytes; a larger one is refused and the cache relisted."},
    )
    cache_max_objects: int = field(
        default=DEFAULT_CACHE_MAX_OBJECTS,
        metadata={"help": "Most pods, and most nodes, the watch cache holds; beyond it collections fail."},
    )

    @property
    def effective_expiry(self) -> float:
        """The runtime's default (two cycles of interval + timeout: a healthy but slow collection never lets its
        series expire), and never less than a collection failing on a slow API server takes: a health check and
        one list request, each up to request-timeout. The last snapshot must outlive it, or
        k8s_api_server_count{error} would vanish while the API server misbehaves."""
        if self.expiry is not None:
            return self.expiry
        return max(super().effective_expiry, self.interval + 2 * self.request_timeout + 1.0)

    def validate(self) -> None:
        super().validate()
        sources = [
            name
            for name, used in (
                ("kubeconfig", self.kubeconfig),
                ("in-cluster", self.in_cluster),
                ("api-url", self.api_url),
            )
            if used
        ]
        if len(sources) != 1:
            found = ", ".join(sources) if sources else "none"
            raise ConfigError(
                "kubeconfig" if not sources else sources[1].replace("-", "_"),
                f"set exactly one credential source (kubeconfig, in-cluster or api-url); found {found}",
            )
        for name in ("token_file", "ca_file"):
            if getattr(self, name) is not None and self.api_url is None:
                raise ConfigError(name, "only used with api-url")
        if self.kubeconfig is not None:
            _check_kubeconfig(self.kubeconfig)
        if self.api_url is not None:
            if not self.api_url.startswith(("https://", "http://")):
                raise ConfigError("api_url", f"{self.api_url!r} is not an http(s) URL")
            if self.token_file is None:
                raise ConfigError("token_file", "api-url needs a bearer-token file")
            _check_file("token_file", self.token_file)
            if self.ca_file is not None:
                _check_file("ca_file", self.ca_file)
        if self.in_cluster:
            if not os.environ.get("KUBERNETES_SERVICE_HOST") or not os.environ.get("KUBERNETES_SERVICE_PORT"):
                raise ConfigError("in_cluster", "KUBERNETES_SERVICE_HOST/PORT are not set: not running in a pod")
            _check_file("in_cluster", IN_CLUSTER_TOKEN)
        if not (math.isfinite(self.request_timeout) and self.request_timeout >= MIN_REQUEST_TIMEOUT_SECONDS):
            raise ConfigError(
                "request_timeout",
                f"must be at least {MIN_REQUEST_TIMEOUT_SECONDS:g} seconds, got {self.request_timeout}",
            )
        if self.request_timeout > self.timeout:
            raise ConfigError("request_timeout", f"must not exceed the collection timeout ({self.timeout:g}s)")
        low, high = RESPONSE_BYTES_BOUNDS
        if not low <= self.max_response_bytes <= high:
            raise ConfigError(
                "max_response_bytes", f"must be between {low} and {high} bytes, got {self.max_response_bytes}"
            )
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigError("page_size", f"must be between 1 and {MAX_PAGE_SIZE}, got {self.page_size}")
        if not self.gpu_resources:
            raise ConfigError("gpu_resources", "name at least one resource, e.g. nvidia.com/gpu")
        if not self.service_label or not self.job_label or self.service_label == self.job_label:
            raise ConfigError("job_label", "service-label and job-label must be two different, non-empty labels")
        if self.log_limit < 0:
            raise ConfigError("log_limit", f"must be >= 0, got {self.log_limit}")
        self._validate_watch()

    def _validate_watch(self) -> None:
        if not math.isfinite(self.watch_timeout) or not 1 <= self.watch_timeout <= 86_400:
            raise ConfigError("watch_timeout", f"must be between 1 and 86400 seconds, got {self.watch_timeout}")
        if not math.isfinite(self.watch_idle_timeout) or self.watch_idle_timeout <= 0:
            raise ConfigError(
                "watch_idle_timeout", f"must be a positive number of seconds, got {self.watch_idle_timeout}"
            )
        if not MIN_WATCH_MAX_EVENT_BYTES <= self.watch_max_event_bytes <= 2**30:
            raise ConfigError(
                "watch_max_event_bytes",
                f"must be between {MIN_WATCH_MAX_EVENT_BYTES} (one ordinary object) and {2**30}, "
                f"got {self.watch_max_event_bytes}",
            )
        if self.cache_max_objects < 1:
            raise ConfigError("cache_max_objects", f"must be >= 1, got {self.cache_max_objects}")


def _check_file(option: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(option, f"{path} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise ConfigError(option, f"{path} is not readable by this user")


def _check_kubeconfig(path: Path) -> None:
    _check_file("kubeconfig", path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError("kubeconfig", f"{path} is not a readable YAML file: {exc}") from None
    if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("contexts"):
        raise ConfigError("kubeconfig", f"{path} has no clusters or contexts: not a kubeconfig")
