"""Ansible filter for Prometheus durations (``30s``, ``1m30s``, ``100ms``, ``31d``), in seconds.

The roles compare durations (a scrape timeout must fit in the scrape interval) with this filter of the collection
itself, so that the collection needs nothing beyond ansible-core.
"""

from __future__ import annotations

import re
from typing import Any

# Prometheus' units (model.ParseDuration): a year is 365 days, a week 7 days.
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")


def duration_seconds(value: Any) -> float:
    """Seconds of a Prometheus duration; anything else is an error that names the value."""
    text = str(value).strip()
    if not _DURATION.match(text):
        raise ValueError(f"{value!r} is not a Prometheus duration such as 30s, 1m30s, 100ms or 31d")
    return sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(text))


class FilterModule:
    """pai.monitoring.duration_seconds (the collection's plugins/filter/)."""

    def filters(self) -> dict[str, Any]:
        return {"duration_seconds": duration_seconds}
