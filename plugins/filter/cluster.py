"""Ansible filter of the alertmanager role: the gossip peers of one Alertmanager, from the inventory.

Every host of the cluster group runs an Alertmanager; each joins the others (``--cluster.peer``). A peer is reached
at its address variable (``inventory_hostname`` or ``ansible_host``) and at the gossip port it listens on: the port
of its own ``alertmanager_cluster_listen_address`` or ``alertmanager_cluster_port`` when its host variables set one,
else the cluster's default port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PeerError(ValueError):
    """A peer whose address or port cannot be used; the message says what to fix."""


def _var(hostvars: Mapping[str, Any], host: str, name: str) -> Any:
    try:
        variables = hostvars[host]
        return variables.get(name)
    except (KeyError, TypeError):
        return None


def _port(host: str, listen: Any, port: Any, default: int) -> int:
    if listen:
        text = str(listen)
        if ":" not in text or not text.rsplit(":", 1)[1].isdigit():
            raise PeerError(f"{host}: alertmanager_cluster_listen_address {text!r} is not HOST:PORT")
        return int(text.rsplit(":", 1)[1])
    return int(port) if port not in (None, "") else int(default)


def cluster_peers(
    hosts: Sequence[str], me: str, hostvars: Mapping[str, Any], address_var: str, default_port: int
) -> list[str]:
    """``HOST:PORT`` of every host of the cluster but ``me``, sorted; IPv6 addresses in brackets."""
    peers = []
    for host in sorted(set(hosts)):
        if host == me:
            continue
        address = host if address_var == "inventory_hostname" else str(_var(hostvars, host, address_var) or host)
        if ":" in address and not address.startswith("["):
            address = f"[{address}]"
        port = _port(
            host,
            _var(hostvars, host, "alertmanager_cluster_listen_address"),
            _var(hostvars, host, "alertmanager_cluster_port"),
            default_port,
        )
        if not 0 < port < 65536:
            raise PeerError(f"{host}: gossip port {port} is not 1-65535")
        peers.append(f"{address}:{port}")
    return peers


class FilterModule:
    """Filters of the alertmanager role (pai.monitoring.<name> in templates: the collection's plugins/filter/)."""

    def filters(self) -> dict[str, Any]:
        return {"cluster_peers": cluster_peers}
