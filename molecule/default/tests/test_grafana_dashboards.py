"""What an operator checks after provisioning the dashboards into an existing Grafana (no Grafana runs here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pai_testinfra as pt

testinfra_hosts = [pt.ssh("pai-default-ctl")]

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
DASHBOARD_DIR = "/var/lib/grafana/dashboards/pai"
PROVIDER = "/etc/grafana/provisioning/dashboards/pai-monitoring.yml"


def test_every_dashboard_lands_readable_by_grafana(host: Any) -> None:
    assert DASHBOARDS, "the repository has no dashboards/*.json"
    for source in DASHBOARDS:
        installed = host.file(f"{DASHBOARD_DIR}/{source.name}")
        assert installed.is_file, f"{source.name} was not installed"
        assert installed.user == "root"
        assert installed.group == "grafana"
        assert installed.mode == 0o644
        assert json.loads(installed.content_string) == json.loads(source.read_text())


def test_provider_points_grafana_at_the_dashboards(host: Any) -> None:
    provider = host.file(PROVIDER)
    assert provider.is_file
    assert provider.group == "grafana"
    text = provider.content_string
    assert "type: file" in text
    assert f'path: "{DASHBOARD_DIR}"' in text
    assert 'folder: "PAI"' in text
    assert "updateIntervalSeconds: 30" in text


def test_dashboard_uids_are_unique_as_grafana_requires(host: Any) -> None:
    uids = [json.loads(host.file(f"{DASHBOARD_DIR}/{s.name}").content_string)["uid"] for s in DASHBOARDS]
    assert len(uids) == len(set(uids))
