"""What went wrong talking to the API server, reduced to a short reason from a closed set.

The reason becomes the ``error`` label of ``k8s_api_server_count``, so it must not carry free text (an exception
message, a URL, a body): that would make a new series for every variation.
"""

from __future__ import annotations

import errno
import ssl

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

OK = "ok"
TIMEOUT = "timeout"
CONNECTION_REFUSED = "connection_refused"
CONNECTION_ERROR = "connection_error"
TLS_ERROR = "tls_error"
MALFORMED = "malformed_response"
TOO_LARGE = "response_too_large"
CREDENTIALS = "credentials_error"
TOO_MANY_OBJECTS = "too_many_objects"
"""The watch cache is full (``cache-max-objects``): the cluster is larger than the watchdog was sized for."""
UNKNOWN = "unknown"
_HTTP_CODES = (400, 401, 403, 404, 410, 429, 500, 502, 503, 504)
REASONS: tuple[str, ...] = (
    OK,
    TIMEOUT,
    CONNECTION_REFUSED,
    CONNECTION_ERROR,
    TLS_ERROR,
    MALFORMED,
    TOO_LARGE,
    CREDENTIALS,
    TOO_MANY_OBJECTS,
    *(f"http_{code}" for code in _HTTP_CODES),
    "http_4xx",
    "http_5xx",
    UNKNOWN,
)
"""Every value the ``error`` label can take."""


class ApiFailure(Exception):
    """A request to the API server failed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, what: str, detail: str) -> None:
        self.reason = reason
        self.what = what
        self.detail = detail
        super().__init__(f"{what}: {reason}: {detail}")


def http_reason(status: int) -> str:
    if status in _HTTP_CODES:
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    if 500 <= status < 600:
        return "http_5xx"
    return UNKNOWN


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (urllib3 keeps the cause in ``reason``), outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        inner = getattr(current, "reason", None)
        todo.extend([inner if isinstance(inner, BaseException) else None, current.__cause__, current.__context__])
        todo.extend(a for a in current.args if isinstance(a, BaseException))
    return seen


def classify(exc: BaseException) -> str:
    """The reason for a failed request, from the client's exception."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, ApiException) and item.status:
            return http_reason(int(item.status))
        if isinstance(item, ApiException) and "SSLError" in str(item.reason):
            return TLS_ERROR
    for item in chain:
        if isinstance(item, ssl.SSLError | urllib3.exceptions.SSLError):
            return TLS_ERROR
        if isinstance(item, ConnectionRefusedError) or (isinstance(item, OSError) and item.errno == errno.ECONNREFUSED):
            return CONNECTION_REFUSED
    for item in chain:
        # urllib3 derives NewConnectionError (refused, unreachable, DNS) from ConnectTimeoutError: not a timeout
        if isinstance(item, urllib3.exceptions.NewConnectionError | urllib3.exceptions.NameResolutionError):
            return CONNECTION_ERROR
        if isinstance(item, TimeoutError | urllib3.exceptions.TimeoutError):
            return TIMEOUT
    for item in chain:
        if isinstance(item, urllib3.exceptions.HTTPError | ConnectionError | OSError):
            return CONNECTION_ERROR
        if isinstance(item, ValueError):
            return MALFORMED
    return UNKNOWN
