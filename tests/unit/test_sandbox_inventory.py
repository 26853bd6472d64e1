"""The sandbox's alert overrides (``Sandbox.inventory()``) against the shipped rules.

The prometheus role refuses an override of an alert no rule file defines, so a stale override would stop the
sandbox's deploy; an injected fault whose alert holds for 10 minutes would not resolve within the e2e tier's
timeouts. Both are checked here, in the fast tier, instead of after a sandbox has been built.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.sandbox import JOB_GPU_IDLE_EXPR, XID_FATAL_EXPR, alert_overrides
from tests.support.prometheus import tuned_rule_file

REPO = Path(__file__).resolve().parents[2]
ALERT_FILES = sorted((REPO / "rules" / "alerts").glob("*.yml"))
SHORT_HOLD_S = 10


def shipped_alerts() -> dict[str, dict[str, Any]]:
    alerts: dict[str, dict[str, Any]] = {}
    for path in ALERT_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts[rule["alert"]] = rule
    return alerts


def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    assert duration[-1] in units, f"unexpected duration {duration!r}"
    assert duration[:-1].isdigit(), f"unexpected duration {duration!r}"
    return int(duration[:-1]) * units[duration[-1]]


def test_every_override_names_a_shipped_alert() -> None:
    assert sorted(set(alert_overrides()) - set(shipped_alerts())) == []


def test_a_shortened_alert_that_holds_through_gaps_holds_briefly() -> None:
    """An alert whose ``for:`` the sandbox shortens is one the e2e tier injects and waits to see resolved."""
    shipped = shipped_alerts()
    long_holds = {
        name: override.get("keep_firing_for", shipped[name]["keep_firing_for"])
        for name, override in alert_overrides().items()
        if "for" in override and "keep_firing_for" in shipped[name]
    }
    assert long_holds, "no injected alert holds through gaps: this test checks nothing"
    assert {name: hold for name, hold in long_holds.items() if seconds(hold) > SHORT_HOLD_S} == {}


def test_the_xid_window_is_the_only_change_to_the_fatal_xid_alert() -> None:
    shipped = shipped_alerts()["GpuXidFatalError"]["expr"]
    assert " < 3600)" in shipped
    assert XID_FATAL_EXPR.split() == shipped.replace(" < 3600)", " < 30)").split()


def test_the_window_is_the_only_change_to_the_idle_gpu_alert() -> None:
    shipped = shipped_alerts()["PaiJobGpuIdle"]["expr"]
    assert "[10m]" in shipped
    assert JOB_GPU_IDLE_EXPR.split() == shipped.replace("[10m]", "[15s]").split()


def test_the_tuned_rule_files_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package prometheus (apt-get install prometheus)")
    for path in ALERT_FILES:
        tuned = tuned_rule_file(tmp_path, f"alerts/{path.name}", alert_overrides())
        result = subprocess.run(
            [promtool, "check", "rules", str(tuned)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
