"""Every metric an alert, a recording rule, a dashboard or a promtool suite names has a producer.

A producer is one of our collectors (its MetricSpecs), a recording rule, or a program listed in
rules/external-metrics.yml (node_exporter, Prometheus, Alertmanager), whose names the integration tier checks against
the real binaries. An alert on a metric nothing exports can never fire, and a rule test that feeds such a series
passes while proving nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pai_monitoring import metrics_doc
from tests.support.promql import metric_names, series_name

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "rules" / "alerts").glob("*.yml")) + sorted((REPO / "rules" / "recording").glob("*.yml"))
SUITES = sorted((REPO / "rules" / "tests").glob("*.test.yml"))
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
EXTERNAL = yaml.safe_load((REPO / "rules" / "external-metrics.yml").read_text(encoding="utf-8"))


def _collector_names() -> set[str]:
    names: set[str] = set()
    for _daemon, _collector, spec in metrics_doc.all_specs():
        names.add(spec.name)
        if spec.type == "histogram":
            names |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
    return names


def _rules() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                yield path, rule


def _dashboard_queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from _dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dashboard_queries(item)


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (rule file, dashboard or promtool suite)."""
    used: dict[str, set[str]] = {}
    for path, rule in _rules():
        for name in metric_names(str(rule["expr"])):
            used.setdefault(name, set()).add(f"{path.parent.name}/{path.name}: {rule.get('alert') or rule['record']}")
    for path in DASHBOARDS:
        for query in _dashboard_queries(json.loads(path.read_text(encoding="utf-8"))):
            for name in metric_names(query):
                used.setdefault(name, set()).add(f"dashboards/{path.name}")
    for path in SUITES:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for series in test.get("input_series") or []:
                used.setdefault(series_name(series["series"]), set()).add(f"rules/tests/{path.name}: {test['name']}")
    return used


COLLECTED = _collector_names()
RECORDED = {str(rule["record"]) for _, rule in _rules() if "record" in rule}
LISTED = {name for names in EXTERNAL.values() for name in names}
USED = used_names()


def test_every_metric_used_has_a_producer() -> None:
    orphans = {name: sorted(where) for name, where in USED.items() if name not in COLLECTED | RECORDED | LISTED}
    assert orphans == {}, "metrics nothing produces (add a producer, or list them in rules/external-metrics.yml)"


def test_every_listed_external_metric_is_used() -> None:
    assert sorted(LISTED - set(USED)) == [], "rules/external-metrics.yml lists names nothing uses: remove them"


def test_external_names_are_not_ours() -> None:
    assert sorted(LISTED & (COLLECTED | RECORDED)) == []


def test_the_external_list_is_sorted_and_unique() -> None:
    for program, names in EXTERNAL.items():
        assert names == sorted(set(names)), program


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{pai_service_name="watchdog"} != 1', {"up"}),
        (
            'max without (error) (k8s_api_server_count{error!="ok"}) > 0',
            {"k8s_api_server_count"},
        ),
        (
            'sum by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])) / on (instance) group_left (x) a:b:c',
            {"node_cpu_seconds_total", "a:b:c"},
        ),
        (
            'label_replace(task_cpu_percent, "container_label_PAI_JOB_NAME", "$1", "job_name", "(.*)")',
            {"task_cpu_percent"},
        ),
        ('rate(task_block_in_byte{job_name="$job"}[$__rate_interval])', {"task_block_in_byte"}),
        ('label_values(nvidiasmi_utilization_gpu{instance=~"$host:.*"}, minor_number)', {"nvidiasmi_utilization_gpu"}),
        ("count(up == 0) or vector(0)", {"up"}),
        ("time() - pai_gpu_xid_last_seen_timestamp_seconds < 3.6e3", {"pai_gpu_xid_last_seen_timestamp_seconds"}),
        ("x offset 5m and bool y", {"x", "y"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
