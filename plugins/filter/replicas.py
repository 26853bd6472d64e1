"""Ansible filter of the prometheus role for replicas: what leaves a replica must not carry its replica label.

Replicas of a highly available Prometheus differ only in the external label ``replica``. Prometheus adds external
labels to everything it sends, and relabels after that, so a ``labeldrop`` in ``alert_relabel_configs`` makes the
replicas' alerts identical (the Alertmanager cluster deduplicates them) and one in ``write_relabel_configs`` makes
their remote-written series identical (a store deduplicates samples of the same series, e.g. VictoriaMetrics with
``-dedup.minScrapeInterval``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def remote_write_relabel(entries: Sequence[Mapping[str, Any]], relabel: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``remote_write`` entries with ``relabel`` appended to each one's ``write_relabel_configs`` (a copy)."""
    result: list[Any] = []
    for entry in entries:
        changed = dict(entry)
        if relabel:
            changed["write_relabel_configs"] = [*(entry.get("write_relabel_configs") or []), *relabel]
        result.append(changed)
    return result


class FilterModule:
    """Filters of the prometheus role (pai.monitoring.<name> in templates: the collection's plugins/filter/)."""

    def filters(self) -> dict[str, Any]:
        return {"remote_write_relabel": remote_write_relabel}
