"""The GPU alerts name the node, the GPU and the job, and the fatal ones reach the cordon route (no binaries).

What promtool checks case by case (rules/tests/gpu.test.yml), checked here for every GPU alert at once: their
firing cases show the identity labels, their hints never hand a minor number to ``nvidia-smi -i``, and the
Alertmanager defaults send every fatal GPU alert to the cordon webhook.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "rules"
GPU_RULES = yaml.safe_load((RULES / "alerts" / "gpu.rules.yml").read_text(encoding="utf-8"))
SUITE = yaml.safe_load((RULES / "tests" / "gpu.test.yml").read_text(encoding="utf-8"))
AM_DEFAULTS = yaml.safe_load((RULES / "alertmanager.defaults.yml").read_text(encoding="utf-8"))
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles" / "alertmanager" / "defaults" / "main.yml").read_text(encoding="utf-8"))

# Alerts that cannot name a GPU yet (none: NvidiaZombieProcess reads pai_processes_stuck, with index and UUID).
NOT_PER_GPU_YET: set[str] = set()
GPU_ALERTS: dict[str, dict[str, Any]] = {
    rule["alert"]: rule for group in GPU_RULES["groups"] for rule in group["rules"] if "alert" in rule
}
FATAL = sorted(name for name, rule in GPU_ALERTS.items() if rule["labels"]["severity"] == "fatal")


def firing_labels(name: str) -> list[dict[str, str]]:
    found = []
    for test in SUITE["tests"]:
        for case in test.get("alert_rule_test") or []:
            if case["alertname"] == name:
                found += [alert["exp_labels"] for alert in case.get("exp_alerts") or []]
    return found


@pytest.mark.parametrize("name", sorted(set(GPU_ALERTS) - NOT_PER_GPU_YET))
def test_every_gpu_alert_names_its_node_and_gpu(name: str) -> None:
    fired = firing_labels(name)
    assert fired, f"{name}: no firing case"
    named = [labels for labels in fired if "node_name" in labels]
    assert named, f"{name}: no firing case names the node"
    for labels in named:
        if "minor_number" in labels:
            # a GPU never read (GpuNotReadable) has no known minor number or UUID, only its index
            wanted = {"index"} if labels["minor_number"] == "unknown" else {"index", "uuid"}
            assert wanted <= set(labels), f"{name}: a per-GPU alert without index and UUID: {labels}"


@pytest.mark.parametrize("name", sorted(GPU_ALERTS))
def test_hints_select_a_gpu_by_index_or_uuid(name: str) -> None:
    text = " ".join(str(v) for v in GPU_ALERTS[name]["annotations"].values())
    assert not re.search(r"-i\s+\{\{\s*\$labels\.minor_number", text), name
    if name not in NOT_PER_GPU_YET:
        assert "$labels.instance }} " not in GPU_ALERTS[name]["annotations"]["summary"], name


def test_there_are_fatal_gpu_alerts() -> None:
    assert {"NvidiaSmiDoubleEccError", "GpuFallenOffBus", "GpuRowRemapFailure"} <= set(FATAL)


@pytest.mark.parametrize("defaults", [AM_DEFAULTS, ROLE_DEFAULTS], ids=["rules", "role"])
def test_every_fatal_gpu_alert_reaches_the_cordon_route(defaults: dict[str, Any]) -> None:
    cordon = defaults["alertmanager_cordon_alertnames"]
    assert sorted(cordon) == FATAL


def test_per_gpu_alerts_hold_through_missing_data() -> None:
    """An NVML hang or an exporter restart must not resolve a firing GPU alert (issue 12's incident)."""
    for name, rule in GPU_ALERTS.items():
        if "minor_number" in rule["expr"] or "instance_minor_number:" in rule["expr"]:
            assert rule.get("keep_firing_for"), name
