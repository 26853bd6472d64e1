"""Reading a collector's families the way a scrape would see them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Scrape:
    """The samples of one ``collect()``, searchable by name and labels."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)
        self.samples = [Sample(s.name, dict(s.labels), s.value) for f in self.families for s in f.samples]

    def find(self, metric: str, /, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]

    def one(self, metric: str, /, **labels: str) -> Sample:
        found = self.find(metric, **labels)
        assert len(found) == 1, f"expected one {metric}{labels}, found {found}"
        return found[0]

    def value(self, metric: str, /, **labels: str) -> float:
        return self.one(metric, **labels).value

    def names(self) -> set[str]:
        return {f.name for f in self.families}

    def api_error(self) -> str:
        return self.one("k8s_api_server_count").labels["error"]

    def errors(self, kind: str) -> float:
        return self.value("process_error_log_total", type=kind)
