"""Every panel of every dashboard in dashboards/ runs against the sandbox Prometheus without an error, and returns
data unless its description says it is empty while the cluster is healthy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sandbox.sandbox import REPO, Sandbox

pytestmark = pytest.mark.e2e

DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
EMPTY_OK = "Empty while healthy."
# Grafana's built-in variables, as Grafana would fill them for a 3-hour view on a 5-second scrape.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "3h"}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def cases() -> list[Any]:
    params = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                params.append(pytest.param(path, panel, target, id=f"{path.stem}:{panel['title']}:{target['refId']}"))
    return params


def substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def fill_variables(
    sandbox: Sandbox, dashboard: dict[str, Any], values: dict[str, str], rest: list[dict[str, Any]], limit: int
) -> list[dict[str, str]]:
    """Every way Grafana could fill the query variables: each value of a variable (up to ``limit``), then the
    variables that follow it, which may depend on it (label_values() with a regex, as Grafana runs it)."""
    if not rest:
        return [values]
    variable, remaining = rest[0], rest[1:]
    definition = substitute(variable["definition"], values)
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match, f"variable {variable['name']}: unsupported query {definition!r}"
    selector, label = match.groups()
    found: list[str] = sandbox.get_json("prometheus", f"/api/v1/label/{label}/values", {"match[]": selector})["data"]
    regex = variable.get("regex", "").strip("/")
    if regex:
        found = sorted({m.group(1) for v in found if (m := re.fullmatch(regex, v))})
    assert found, f"variable {variable['name']} of {dashboard['uid']} has no value ({definition})"
    combos: list[dict[str, str]] = []
    for value in sorted(found)[:limit]:
        combos += fill_variables(sandbox, dashboard, {**values, variable["name"]: value}, remaining, 1)
    return combos


def variable_combinations(sandbox: Sandbox, dashboard: dict[str, Any]) -> list[dict[str, str]]:
    """The first query variable takes each of its values (up to 8: every node of the sandbox); later ones the first."""
    variables = [v for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return fill_variables(sandbox, dashboard, dict(BUILTINS), variables, 8)


def test_dashboards_exist() -> None:
    uids = {json.loads(p.read_text())["uid"] for p in DASHBOARDS}
    assert {"pai-cluster-overview", "pai-node", "pai-gpu", "pai-job"} <= uids


@pytest.mark.parametrize(("path", "panel", "target"), cases())
def test_panel_query_returns_data(sandbox: Sandbox, path: Path, panel: dict[str, Any], target: dict[str, Any]) -> None:
    """A query that errors fails; so does one that is empty for every value of the dashboard's variables, unless
    the panel says it is empty while the cluster is healthy (it lists faults)."""
    dashboard = json.loads(path.read_text())
    non_empty = []
    for values in variable_combinations(sandbox, dashboard):
        expr = substitute(target["expr"], values)
        assert "$" not in expr, f"unfilled variable in {expr!r}"
        data = sandbox.get_json("prometheus", "/api/v1/query", {"query": expr})
        assert data["status"] == "success", f"{expr!r}: {data}"
        if data["data"]["result"]:
            non_empty.append(expr)
    if EMPTY_OK not in panel.get("description", ""):
        assert non_empty, f"panel {panel['title']!r} of {path.name}: {target['expr']!r} returns nothing for any node"
