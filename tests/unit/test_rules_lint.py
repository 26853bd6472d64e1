"""Structural checks of the shipped rules, their promtool suites and the Alertmanager defaults (no binaries)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
ALERT_FILES = sorted((RULES / "alerts").glob("*.yml"))
RECORDING_FILES = sorted((RULES / "recording").glob("*.yml"))
SUITES = sorted((RULES / "tests").glob("*.test.yml"))
AM_TEMPLATE = REPO / "roles" / "alertmanager" / "templates" / "alertmanager.yml.j2"
AM_DEFAULTS = RULES / "alertmanager.defaults.yml"

SEVERITIES = {"info", "warn", "error", "fatal"}
COMPONENTS = {"gpu", "node", "kubernetes", "jobs", "exporter", "monitoring"}
CONCERNS = {"gpu", "node", "kubernetes", "jobs", "exporters", "monitoring"}
DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
RECORD_NAME = re.compile(r"^[a-z_]+:[a-zA-Z0-9_]+:[a-z0-9_]+$")

# The original system's alerts (pai-facts.md section 3); NodeOutOfDisk is retired (docs/alerts.md says why).
ORIGINAL_ALERTS = {
    "NvidiaSmiLatencyTooLarge", "NvidiaSmiDoubleEccError", "NvidiaMemoryLeak", "NvidiaZombieProcess",
    "GpuUsedByExternalProcess", "GpuUsedByZombieContainer", "NodeGpuCountChanged", "NodeGpuLowPerfState",
    "PaiJobsZombie", "PaiJobPending", "k8sApiServerNotOk", "k8sDockerDaemonNotOk", "NodeFilesystemUsage",
    "NodeMemoryUsage", "NodeCPUUsage", "NodeDiskPressure", "NodeOutOfDisk", "NodeNotReady",
    "AzureAgentConsumeTooMuchMem", "PaiServicePodNotRunning", "PaiServicePodNotReady", "WatchdogNotUp",
    "JobExporterHangs",
}  # fmt: skip
RETIRED = {"NodeOutOfDisk"}
# Names from the "Metrics used" table of the original design that no collector emits any more.
LEGACY_RECORDS = {
    "container_CPUPerc", "container_MemUsage", "container_NetIn", "container_NetOut", "container_BlockIn",
    "container_BlockOut", "container_GPUPerc", "container_GPUMemPerc",
}  # fmt: skip
# Xid codes caused by user programs: never alerted.
APPLICATION_XIDS = ("13", "31", "43")


def _rules(files: list[Path], kind: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in files:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if kind in rule:
                    yield path, rule


ALERTS = {rule["alert"]: rule for _, rule in _rules(ALERT_FILES, "alert")}
RECORDS = {rule["record"]: rule for _, rule in _rules(RECORDING_FILES, "record")}


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SUITE_DOCS = {path: yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) for path in SUITES}


def _suite_tests() -> Iterator[dict[str, Any]]:
    for doc in SUITE_DOCS.values():
        yield from doc["tests"]


def test_rule_files_are_split_by_concern() -> None:
    assert {p.name.split(".", 1)[0] for p in ALERT_FILES} == CONCERNS


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for _, rule in _rules(ALERT_FILES, "alert")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_for_severity_component_and_runbook(name: str) -> None:
    rule = ALERTS[name]
    assert DURATION.match(str(rule.get("for", ""))), f"{name}: needs a for: duration"
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["component"] in COMPONENTS
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    meaning, mark, first = annotations["description"].partition("First check:")
    assert mark, f"{name}: the description must say 'First check: ...'"
    assert meaning.strip()
    assert first.strip()


def test_every_original_alert_is_kept_unless_retired() -> None:
    assert sorted(ORIGINAL_ALERTS - RETIRED - set(ALERTS)) == []
    assert sorted(RETIRED & set(ALERTS)) == []


def test_original_severities_are_kept() -> None:
    expected = {
        "NvidiaSmiDoubleEccError": "fatal", "NodeGpuCountChanged": "fatal", "k8sApiServerNotOk": "fatal",
        "k8sDockerDaemonNotOk": "fatal", "NvidiaMemoryLeak": "error", "NodeNotReady": "error",
        "PaiServicePodNotRunning": "error", "WatchdogNotUp": "error", "PaiJobsZombie": "info",
        "JobExporterHangs": "warn", "NodeGpuLowPerfState": "warn",
    }  # fmt: skip
    assert {name: ALERTS[name]["labels"]["severity"] for name in expected} == expected


def test_watchdog_not_up_reads_the_watchdog_target() -> None:
    assert 'up{pai_service_name="watchdog"}' in ALERTS["WatchdogNotUp"]["expr"]


def test_every_exporter_of_the_suite_has_a_target_down_alert() -> None:
    exprs = " ".join(rule["expr"] for rule in ALERTS.values())
    for service in ("node-exporter", "job-exporter", "watchdog", "prometheus", "alertmanager"):
        assert f'up{{pai_service_name="{service}"}}' in exprs, service


def test_application_xids_are_not_alerted() -> None:
    for name in ("GpuXidFatalError", "GpuXidError"):
        alerted = re.search(r'xid=~"([^"]+)"', ALERTS[name]["expr"])
        assert alerted is not None
        assert not set(alerted.group(1).split("|")) & set(APPLICATION_XIDS)
    excluded = re.search(r'xid!~"([^"]+)"', ALERTS["GpuXidUnclassified"]["expr"])
    assert excluded is not None
    assert set(APPLICATION_XIDS) <= set(excluded.group(1).split("|"))


def test_gpu_alerts_can_be_silenced_per_gpu() -> None:
    """The GPU-lost inhibition needs component="gpu" on every per-GPU alert."""
    for name, rule in ALERTS.items():
        if "minor_number" in rule["annotations"]["summary"] and name != "GpuFallenOffBus":
            assert rule["labels"]["component"] == "gpu", name


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_recording_rule_name(name: str) -> None:
    assert RECORD_NAME.match(name) or name.startswith("container_"), name


def test_design_document_names_are_recorded() -> None:
    assert sorted(LEGACY_RECORDS - set(RECORDS)) == []


def test_suites_load_existing_rule_files() -> None:
    loaded: set[Path] = set()
    for path, doc in SUITE_DOCS.items():
        for rule_file in doc["rule_files"]:
            target = (path.parent / rule_file).resolve()
            assert target.is_file(), f"{path.name}: {rule_file} does not exist"
            loaded.add(target)
    assert {p.resolve() for p in ALERT_FILES + RECORDING_FILES} <= loaded


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_a_firing_and_a_silent_case(name: str) -> None:
    firing = silent = False
    for test in _suite_tests():
        for case in test.get("alert_rule_test") or []:
            if case["alertname"] != name:
                continue
            expected = case.get("exp_alerts") or []
            if not expected:
                silent = True
            elif all({"summary", "description"} <= set(a.get("exp_annotations") or {}) for a in expected):
                firing = True
    assert firing, f"{name}: no case that fires with its annotations checked"
    assert silent, f"{name}: no case that must not fire"


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_recording_rule_has_an_expression_test(name: str) -> None:
    exprs = [case["expr"] for test in _suite_tests() for case in test.get("promql_expr_test") or []]
    assert any(re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr) for expr in exprs), name


def test_alertmanager_template_variables_have_documented_defaults() -> None:
    used = set(re.findall(r"\balertmanager_\w+", AM_TEMPLATE.read_text(encoding="utf-8")))
    text = AM_DEFAULTS.read_text(encoding="utf-8")
    defaults = yaml.safe_load(text)
    assert sorted(used - set(defaults)) == [], "template variables without a default"
    assert sorted(set(defaults) - used) == [], "defaults the template does not use"
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^alertmanager_\w+:", line):
            assert lines[index - 1].startswith("#"), f"{line.split(':')[0]} needs a comment above it"


# Alerts whose data come from scrapes that can pause (node_exporter, the job-exporter, the watchdog) hold through a
# gap instead of announcing a recovery nobody saw (docs/alerts.md, "Alerts whose meaning changed").
HOLDING_FILES = ("node", "kubernetes")


@pytest.mark.parametrize(
    "name",
    sorted(
        rule["alert"]
        for path, rule in _rules(ALERT_FILES, "alert")
        if path.name.split(".", 1)[0] in HOLDING_FILES
        and "job_container" not in rule["expr"]
        and "pai_job_pod_count" not in rule["expr"]
    ),
)
def test_alerts_on_scraped_state_hold_through_gaps(name: str) -> None:
    assert DURATION.match(str(ALERTS[name].get("keep_firing_for", ""))), f"{name}: needs keep_firing_for"
