"""Metric names in a PromQL expression, for the lint that checks every name has a producer.

Not a PromQL parser: it removes what cannot be a metric name (strings, label matchers, ranges, grouping label
lists, function names, keywords, numbers, Grafana variables) and returns the identifiers that are left.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf",
     "nan", "atan2"}
)  # fmt: skip
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*\w+\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, e.g. ``{"node_filesystem_avail_bytes", "node_filesystem_size_bytes"}``.

    Grafana's ``label_values(selector, label)`` is read as its selector.
    """
    values = _LABEL_VALUES.match(expr)
    if values:
        expr = values.group(1)
    expr = _STRING.sub('""', expr)
    expr = _BRACES.sub(" ", expr)
    expr = _BRACKETS.sub(" ", expr)
    expr = _GROUPING.sub(" ", expr)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(expr):
        word = match.group(0)
        if expr[match.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def series_name(series: str) -> str:
    """The metric name of a promtool ``input_series`` entry such as ``up{job="node"}``."""
    return series.split("{", 1)[0].strip()
