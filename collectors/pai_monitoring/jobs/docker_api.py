"""A minimal Docker Engine API client: raw HTTP/1.1 over the daemon's UNIX socket, every call with a timeout.

The collector never needs the docker SDK or the ``docker`` command: it pings the daemon (``docker_daemon_count``),
lists containers with their state (zombie detection) and inspects a new container once for its labels.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 1.0
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""An answer longer than this (a container list of tens of thousands) is treated as a bad response."""
_API_ERRORS = (OSError, http.client.HTTPException, ValueError)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def error_label(exc: BaseException) -> str:
    """A short, bounded label value for a failed call (the original put exception text here)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, FileNotFoundError):
        return "no socket"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, http.client.HTTPException | ValueError):
        return "bad response"
    return "error"


def socket_answers(path: str, timeout: float) -> str:
    """``ok`` when something accepts a connection on the UNIX socket within ``timeout``, else the error label."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        return error_label(exc)
    finally:
        sock.close()
    return "ok"


class DockerClient:
    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _get(self, url: str) -> tuple[int, bytes]:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", url, headers={"Host": "docker"})
            response = conn.getresponse()
            body = response.read(MAX_RESPONSE_BYTES + 1)
            if len(body) > MAX_RESPONSE_BYTES:
                raise http.client.HTTPException("answer too long")
            return response.status, body
        finally:
            conn.close()

    def ping(self) -> str:
        """``ok`` if the daemon answers ``/_ping`` within the timeout, else a short error label."""
        try:
            status, body = self._get("/_ping")
        except _API_ERRORS as exc:
            return error_label(exc)
        return "ok" if status == http.client.OK and body.strip() == b"OK" else "bad response"

    def container_states(self) -> dict[str, str] | None:
        """Full container id -> state (``running``, ``exited``...) of every container; ``None`` on failure."""
        try:
            status, body = self._get("/containers/json?all=1")
            if status != http.client.OK:
                return None
            items = json.loads(body)
        except _API_ERRORS:
            return None
        return {str(c.get("Id")): str(c.get("State", "unknown")) for c in items if isinstance(c, dict)}

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """``GET /containers/<id>/json``; ``None`` on failure or when the daemon does not know the container."""
        try:
            status, body = self._get(f"/containers/{container_id}/json")
            if status != http.client.OK:
                return None
            data = json.loads(body)
        except _API_ERRORS:
            return None
        return data if isinstance(data, dict) else None


def inspect_metadata(data: dict[str, Any]) -> tuple[dict[str, str], dict[str, str], str]:
    """Labels, environment and name (without the leading ``/``) from an inspect answer."""
    config = data.get("Config") or {}
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if sep:
            env[key] = value
    return labels, env, str(data.get("Name", "")).lstrip("/")
