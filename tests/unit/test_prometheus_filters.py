"""Filters of the prometheus role: alert overrides on shipped rule files, scrape targets from inventory groups."""

from __future__ import annotations

import base64
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support.modules import load_file

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "filter"
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def _load(name: str) -> ModuleType:
    return load_file(PLUGINS / f"{name}.py", f"pai_filter_{name}")


rules = _load("rules")
targets = _load("targets")
durations = _load("durations")

SHIPPED = """\
# comment kept when nothing changes
groups:
  - name: node-rules
    rules:
      - alert: NodeCPUUsage
        expr: (100 - avg by (instance) (irate(node_cpu_seconds_total{mode="idle"}[5m])) * 100) > 98
        for: 5m
        labels:
          severity: warn
        annotations:
          summary: "CPU of {{ $labels.instance }} above 98%"
      - alert: NodeMemoryUsage
        expr: |
          (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)
            / node_memory_MemTotal_bytes * 100 > 95
        for: 5m
        labels:
          severity: warn
  - name: gpu_related
    rules:
      - alert: NvidiaMemoryLeak
        expr: nvidiasmi_memory_leak_count > 0
        for: 5m
        labels:
          severity: error
  - name: recording
    rules:
      - record: node:gpu_utilization:count
        expr: count(gpu_utilization) by (instance)
"""


def _alerts(text: str) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(text)
    return {rule["alert"]: rule for group in data["groups"] for rule in group["rules"] if "alert" in rule}


def test_file_without_matching_override_is_shipped_verbatim() -> None:
    assert rules.apply_overrides(SHIPPED, {}) == SHIPPED
    assert rules.apply_overrides(SHIPPED, None) == SHIPPED


def test_override_changes_threshold_duration_and_severity_only_of_that_alert() -> None:
    out = rules.apply_overrides(
        SHIPPED, {"NodeCPUUsage": {"expr": "node_load1 > 64", "for": "15m", "severity": "error"}}
    )
    alerts = _alerts(out)
    assert alerts["NodeCPUUsage"]["expr"] == "node_load1 > 64"
    assert alerts["NodeCPUUsage"]["for"] == "15m"
    assert alerts["NodeCPUUsage"]["labels"] == {"severity": "error"}
    assert alerts["NodeCPUUsage"]["annotations"]["summary"] == "CPU of {{ $labels.instance }} above 98%"
    assert alerts["NodeMemoryUsage"] == _alerts(SHIPPED)["NodeMemoryUsage"]
    assert alerts["NvidiaMemoryLeak"] == _alerts(SHIPPED)["NvidiaMemoryLeak"]


def test_disabled_alert_is_dropped_and_its_empty_group_too() -> None:
    out = rules.apply_overrides(SHIPPED, {"NvidiaMemoryLeak": {"enabled": False}})
    data = yaml.safe_load(out)
    assert [group["name"] for group in data["groups"]] == ["node-rules", "recording"]
    assert "NvidiaMemoryLeak" not in _alerts(out)
    assert data["groups"][1]["rules"] == [
        {"record": "node:gpu_utilization:count", "expr": "count(gpu_utilization) by (instance)"}
    ]


def test_labels_and_annotations_are_merged_into_the_shipped_ones() -> None:
    out = rules.apply_overrides(
        SHIPPED, {"NodeCPUUsage": {"labels": {"team": "infra"}, "annotations": {"runbook_url": "https://wiki/cpu"}}}
    )
    alert = _alerts(out)["NodeCPUUsage"]
    assert alert["labels"] == {"severity": "warn", "team": "infra"}
    assert alert["annotations"] == {
        "summary": "CPU of {{ $labels.instance }} above 98%",
        "runbook_url": "https://wiki/cpu",
    }


def test_multiline_expressions_stay_readable_block_scalars() -> None:
    out = rules.apply_overrides(SHIPPED, {"NodeCPUUsage": {"for": "10m"}})
    assert "expr: |" in out
    assert _alerts(out)["NodeMemoryUsage"]["expr"] == _alerts(SHIPPED)["NodeMemoryUsage"]["expr"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"threshold": 5}, "unknown keys ['threshold']"),
        ({"for": "five minutes"}, "must be a Prometheus duration"),
        ({"enabled": "no"}, "enabled must be true or false"),
        ({"expr": ""}, "expr must be a non-empty string"),
        ({"labels": ["a"]}, "labels must be a mapping"),
        ("off", "must be a mapping"),
    ],
)
def test_bad_override_is_rejected_with_what_to_fix(override: Any, message: str) -> None:
    with pytest.raises(rules.RuleFileError, match=r"prometheus_alert_overrides\['NodeCPUUsage'\]") as info:
        rules.apply_overrides(SHIPPED, {"NodeCPUUsage": override})
    assert message in str(info.value)


def test_unknown_alert_names_are_reported() -> None:
    assert rules.unknown_overrides([SHIPPED], {"NodeCPUUsage": {}, "NodeCpuUsage": {}}) == ["NodeCpuUsage"]
    assert rules.alert_names([SHIPPED]) == ["NodeCPUUsage", "NodeMemoryUsage", "NvidiaMemoryLeak"]


def test_rule_files_are_told_apart_from_other_yaml(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "node.rules.yml").write_text(SHIPPED)
    (tmp_path / "alertmanager.defaults.yml").write_text("alertmanager_group_wait: 30s\n")
    (tmp_path / "broken.yml").write_text("groups: [\n")
    paths = [str(p) for p in sorted(tmp_path.rglob("*.yml"))]
    assert rules.select_rule_files(paths) == [str(tmp_path / "alerts" / "node.rules.yml")]


def test_not_a_rule_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yml"
    path.write_text("- alert: X\n")
    with pytest.raises(rules.RuleFileError, match=r"site\.yml: rule file has no 'groups' list"):
        rules.render_rule_file(str(path), {"X": {"enabled": False}})


def test_destination_names_do_not_clash_between_subdirectories(tmp_path: Path) -> None:
    assert rules.dest_name(str(tmp_path / "alerts" / "gpu.rules.yml"), str(tmp_path)) == "alerts-gpu.rules.yml"
    assert rules.dest_name(str(tmp_path / "recording" / "gpu.rules.yml"), str(tmp_path)) == "recording-gpu.rules.yml"
    assert rules.dest_name("/site/extra.yaml") == "extra.yml"
    assert rules.dest_name("/site/extra.rules") == "extra.rules.yml"


def test_shipped_rule_files_pass_through_with_an_override_of_each_alert() -> None:
    paths = rules.find_rule_files(str(RULES_DIR))
    assert paths, f"no rule files under {RULES_DIR}"
    names = rules.alert_names(Path(p).read_text() for p in paths)
    overrides = {name: {"for": "7m"} for name in names}
    for path in paths:
        for alert in _alerts(rules.render_rule_file(path, overrides)).values():
            assert alert["for"] == "7m"


# --- scrape targets ---------------------------------------------------------------------------------------------

GROUPS = {
    "gpu_nodes": ["gpu2", "gpu1"],
    "cpu_nodes": ["cpu1"],
    "monitoring": ["mon"],
    "all": ["gpu1", "gpu2", "cpu1", "mon"],
}
JOB = {"name": "pai_job_exporter", "port": 9102, "service_name": "job-exporter", "groups": ["gpu_nodes", "cpu_nodes"]}


def test_targets_come_from_the_job_groups_sorted_and_labelled() -> None:
    assert targets.file_sd(JOB, GROUPS, {}) == [
        {"targets": ["cpu1:9102", "gpu1:9102", "gpu2:9102"], "labels": {"pai_service_name": "job-exporter"}}
    ]


def test_a_host_in_two_groups_is_scraped_once_and_missing_groups_are_empty() -> None:
    job = {**JOB, "groups": ["gpu_nodes", "all", "control"]}
    assert targets.file_sd(job, GROUPS, {})[0]["targets"] == ["cpu1:9102", "gpu1:9102", "gpu2:9102", "mon:9102"]
    assert targets.file_sd({**JOB, "groups": ["control"]}, GROUPS, {}) == []


def test_address_variable_and_host_listen_port_are_honoured() -> None:
    hostvars = {
        "gpu1": {"ansible_host": "10.0.0.1", "job_exporter_web_listen_address": "0.0.0.0:19102"},
        "gpu2": {"ansible_host": "fd00::2"},
        "cpu1": {},
    }
    job = {**JOB, "listen_address_var": "job_exporter_web_listen_address"}
    assert targets.file_sd(job, GROUPS, hostvars, "ansible_host")[0]["targets"] == [
        "10.0.0.1:19102",
        "[fd00::2]:9102",
        "cpu1:9102",
    ]


def test_static_targets_are_added() -> None:
    job = {**JOB, "groups": [], "static_targets": ["legacy.example:9102"]}
    assert targets.file_sd(job, GROUPS, {})[0]["targets"] == ["legacy.example:9102"]


@pytest.mark.parametrize(("address", "port"), [("0.0.0.0:9090", 9090), (":9093", 9093), ("[::1]:9100", 9100)])
def test_listen_port(address: str, port: int) -> None:
    assert targets.listen_port(address) == port


@pytest.mark.parametrize("address", ["9090", "localhost:", "host:99999", "host:0", "a b:90"])
def test_malformed_listen_address_is_rejected(address: str) -> None:
    with pytest.raises(targets.TargetError, match="is not HOST:PORT"):
        targets.listen_port(address)


def test_scrape_configs_read_file_sd_and_take_per_job_options() -> None:
    jobs = [{"name": "node", "port": 9100}, JOB]
    options = {"pai_job_exporter": {"scheme": "https", "basic_auth": {"username": "p", "password_file": "/x"}}}
    configs = targets.scrape_configs(jobs, options, "/etc/prometheus/file_sd")
    assert configs[0] == {"job_name": "node", "file_sd_configs": [{"files": ["/etc/prometheus/file_sd/node.yml"]}]}
    assert configs[1]["scheme"] == "https"
    assert configs[1]["basic_auth"] == {"username": "p", "password_file": "/x"}


def test_alerting_uses_the_alertmanager_targets_and_only_client_options() -> None:
    options = {"alertmanager": {"scheme": "https", "scrape_interval": "5s", "tls_config": {"ca_file": "/ca"}}}
    assert targets.alerting_config("alertmanager", options, "/fsd") == {
        "alertmanagers": [
            {
                "file_sd_configs": [{"files": ["/fsd/alertmanager.yml"]}],
                "scheme": "https",
                "tls_config": {"ca_file": "/ca"},
            }
        ]
    }


def test_rule_files_are_found_one_level_deep_without_test_suites(tmp_path: Path) -> None:
    for relative in ("alerts/gpu.rules.yml", "recording/gpu.rules.yml", "tests/gpu.test.yml", "top.rules.yaml"):
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_text(SHIPPED)
    (tmp_path / "alertmanager.defaults.yml").write_text("alertmanager_group_wait: 30s\n")
    assert rules.find_rule_files(str(tmp_path)) == [
        str(tmp_path / "alerts/gpu.rules.yml"),
        str(tmp_path / "recording/gpu.rules.yml"),
        str(tmp_path / "top.rules.yaml"),
    ]
    assert rules.find_rule_files(str(tmp_path / "missing")) == []


def test_flag_is_read_from_a_slurped_command_line() -> None:
    cmdline = base64.b64encode(b"/usr/bin/prometheus\0--config.file=/etc/p.yml\0--web.listen-address=:9091\0").decode()
    assert targets.cmdline_flag(cmdline, "--web.listen-address") == ":9091"
    assert targets.cmdline_flag(cmdline, "--web.config.file") == ""
    assert targets.cmdline_flag("not base64!", "--web.listen-address") == ""


class _TaggedStr(str):
    """Stand-in for the str subclass Ansible 2.19 passes to filters (its data-tagging wrapper)."""


def test_overrides_given_as_str_subclasses_are_dumped_as_plain_yaml() -> None:
    override = {_TaggedStr("for"): _TaggedStr("10m"), "labels": {_TaggedStr("team"): _TaggedStr("gpu")}}
    out = rules.apply_overrides(SHIPPED, {_TaggedStr("NodeCPUUsage"): override})
    alert = _alerts(out)["NodeCPUUsage"]
    assert alert["for"] == "10m"
    assert alert["labels"] == {"severity": "warn", "team": "gpu"}


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("15s", 15), ("1m", 60), ("1m30s", 90), ("100ms", 0.1), ("2h", 7200), ("31d", 31 * 86400), ("1w1d", 8 * 86400)],
)
def test_durations_are_read_as_prometheus_reads_them(duration: str, seconds: float) -> None:
    assert durations.duration_seconds(duration) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "15", "1.5s", "1 m", "-1s", "10sec"])
def test_a_malformed_duration_is_an_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a Prometheus duration"):
        durations.duration_seconds(bad)
