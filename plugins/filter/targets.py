"""Ansible filters that turn inventory groups into Prometheus scrape jobs and file_sd target files.

Each scrape job of ``prometheus_scrape_jobs`` names the inventory groups whose hosts run the exporter. The
role writes one file_sd file per job, so adding a node to a group rewrites that one file and Prometheus picks
it up without a reload.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Keys of a scrape job's extra options that also apply to Prometheus' Alertmanager client.
ALERTING_KEYS = ("scheme", "basic_auth", "tls_config", "authorization", "path_prefix", "timeout")
_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(?P<port>[0-9]{1,5})$")


class TargetError(ValueError):
    """A scrape job or listen address that cannot be turned into targets; the message says what to fix."""


def listen_port(address: str) -> int:
    """Port of a ``host:port``, ``:port`` or ``[v6]:port`` listen address."""
    match = _LISTEN.match(str(address).strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise TargetError(f"listen address {address!r} is not HOST:PORT (e.g. 0.0.0.0:9090, :9090, [::1]:9090)")
    return int(match["port"])


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _host_var(hostvars: Mapping[str, Any], host: str, name: str | None) -> Any:
    if not name:
        return None
    variables = hostvars.get(host) if hasattr(hostvars, "get") else hostvars[host]
    if variables is None:
        return None
    try:
        return variables[name]
    except (KeyError, TypeError):
        return None


def job_hosts(job: Mapping[str, Any], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Sorted, unique inventory hosts of the job's groups; a group missing from the inventory counts as empty."""
    return sorted({host for group in job.get("groups") or [] for host in groups.get(group) or []})


def file_sd(
    job: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Any],
    address_var: str = "inventory_hostname",
) -> list[dict[str, Any]]:
    """The content of ``file_sd/<job>.yml``: one target group labelled ``pai_service_name``.

    A host's address is its ``address_var`` (``inventory_hostname`` or ``ansible_host``), falling back to its
    inventory name. Its port comes from the host's ``listen_address_var`` variable when the host defines it
    (so a node with a non-default port is scraped there), else from the job's ``port``.
    """
    if "name" not in job or "port" not in job:
        raise TargetError(f"scrape job {job!r} needs at least 'name' and 'port'")
    targets = []
    for host in job_hosts(job, groups):
        address = host
        if address_var != "inventory_hostname":
            address = str(_host_var(hostvars, host, address_var) or host)
        listen = _host_var(hostvars, host, job.get("listen_address_var"))
        port = listen_port(str(listen)) if listen else int(job["port"])
        targets.append(f"{_bracketed(address)}:{port}")
    targets.extend(str(target) for target in job.get("static_targets") or [])
    if not targets:
        return []
    labels = {"pai_service_name": str(job.get("service_name") or job["name"])}
    return [{"targets": sorted(set(targets)), "labels": labels}]


def scrape_configs(
    jobs: Sequence[Mapping[str, Any]], options: Mapping[str, Mapping[str, Any]] | None, file_sd_dir: str
) -> list[dict[str, Any]]:
    """``scrape_configs`` of prometheus.yml: each job reads its file_sd file, plus the site's extra options."""
    configs = []
    for job in jobs:
        config: dict[str, Any] = {
            "job_name": str(job["name"]),
            "file_sd_configs": [{"files": [f"{file_sd_dir}/{job['name']}.yml"]}],
        }
        config.update((options or {}).get(str(job["name"])) or {})
        configs.append(config)
    return configs


def alerting_config(job_name: str, options: Mapping[str, Mapping[str, Any]] | None, file_sd_dir: str) -> dict[str, Any]:
    """``alerting`` section of prometheus.yml: the Alertmanagers are the targets of the ``job_name`` scrape job."""
    client: dict[str, Any] = {"file_sd_configs": [{"files": [f"{file_sd_dir}/{job_name}.yml"]}]}
    extra = (options or {}).get(job_name) or {}
    client.update({key: extra[key] for key in ALERTING_KEYS if key in extra})
    return {"alertmanagers": [client]}


def cmdline_flag(cmdline: str, flag: str) -> str:
    """Value of ``--flag=value`` in a process command line as ``slurp`` returns /proc/PID/cmdline (base64,
    NUL-separated); empty when the flag is absent or the content is not base64."""
    try:
        arguments = base64.b64decode(cmdline, validate=True).decode(errors="replace").split("\0")
    except (binascii.Error, ValueError):
        return ""
    prefix = f"{flag}="
    return next((arg.removeprefix(prefix) for arg in arguments if arg.startswith(prefix)), "")


class FilterModule:
    """Filters of the prometheus role (pai.monitoring.<name> in templates: the collection's plugins/filter/)."""

    def filters(self) -> dict[str, Any]:
        return {
            "listen_port": listen_port,
            "cmdline_flag": cmdline_flag,
            "job_hosts": job_hosts,
            "file_sd": file_sd,
            "scrape_configs": scrape_configs,
            "alerting_config": alerting_config,
        }
