"""A small client of Prometheus's HTTP API: instant queries, with a timeout and a bound on the answer's size."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 32 * 1024 * 1024


class PrometheusUnreachable(Exception):
    """Nothing answered at the URL (refused, timed out, not HTTP)."""


class PrometheusError(Exception):
    """Prometheus answered, but with an error or something that is not an API answer."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.queries = 0

    def _post(self, path: str, form: dict[str, str]) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/v1/{path}",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            method="POST",
        )
        self.queries += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            body = exc.read(MAX_ANSWER_BYTES + 1)
            if exc.code < 400 or (exc.code >= 500 and not body.startswith(b"{")):
                raise PrometheusError(f"HTTP {exc.code} from {self.url}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusUnreachable(f"cannot reach Prometheus at {self.url}: {reason}") from None
        if len(body) > MAX_ANSWER_BYTES:
            raise PrometheusError(f"the answer from {self.url} is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{self.url} did not answer as Prometheus's API does") from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else None
            raise PrometheusError(f"Prometheus at {self.url} refused a query: {error or answer}")
        return answer.get("data")

    def query(self, expr: str, at: float) -> list[Sample]:
        """An instant query at Unix time ``at``; a scalar answer is one sample without labels."""
        data = self._post("query", {"query": expr, "time": f"{at:.3f}"})
        if not isinstance(data, dict):
            raise PrometheusError(f"unexpected answer from {self.url}: {data!r}")
        result = data.get("result")
        if data.get("resultType") == "scalar" and isinstance(result, list):
            return [Sample({}, _number(result[1]))]
        if data.get("resultType") != "vector" or not isinstance(result, list):
            raise PrometheusError(f"unexpected answer from {self.url}: {data.get('resultType')}")
        return [Sample(dict(item.get("metric", {})), _number(item["value"][1])) for item in result]

    def value(self, expr: str, at: float) -> float | None:
        """The single value of a query, or ``None`` when it has no (finite) answer."""
        samples = self.query(expr, at)
        finite = [s.value for s in samples if math.isfinite(s.value)]
        return finite[0] if finite else None


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise PrometheusError(f"not a number in an answer: {text!r}") from None
