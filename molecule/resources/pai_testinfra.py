"""Helpers for the testinfra verifiers of the molecule scenarios.

Everything here runs commands inside a guest through a testinfra ``host`` (ssh, see ``SSH_CONFIG``): the guest image
has no curl, so HTTP requests go through the guest's own ``python3``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import testinfra

# docs/security.md: every unit we write (or harden with a drop-in) must be rated OK or better, with a margin. The
# figure itself moves with systemd's releases (252 in Debian 12, 257 in Debian 13): only the threshold is checked.
EXPOSURE_THRESHOLD = 4.0
REPO = Path(__file__).resolve().parents[2]
# How testinfra and ansible-playbook reach the guests (written by tests/hosts/setup.sh).
SSH_CONFIG = REPO / ".cache" / "ssh" / "config"
# A connection starts with `podman exec`, which waits for podman's lock while other podman commands run.
CONNECT_TIMEOUT_S = 120


def ssh(guest: str) -> str:
    """testinfra's host specification of a guest of the scenario (``testinfra_hosts = [pt.ssh("name")]``)."""
    return f"ssh://{guest}?ssh_config={SSH_CONFIG}&timeout={CONNECT_TIMEOUT_S}"


_FETCH = r"""
import base64, json, ssl, sys, urllib.request
url, user, password, ca = sys.argv[1:5]
request = urllib.request.Request(url)
if user:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
context = None
if url.startswith("https:"):
    context = ssl.create_default_context(cafile=ca or None)
    context.check_hostname = False
try:
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        print(json.dumps({"status": response.status, "body": response.read().decode()}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": ""}))
"""


def journal(host: Any, unit: str, lines: int = 60) -> str:
    """The last lines of a unit's journal, to show when an assertion about it fails."""
    return str(host.run(f"journalctl --no-pager -n {lines} -u {shlex.quote(unit)}").stdout)


def assert_running(host: Any, unit: str) -> None:
    """The unit is enabled and running; its journal is shown otherwise."""
    service = host.service(unit)
    assert service.is_running, f"{unit} is not running:\n{journal(host, unit)}"
    assert service.is_enabled, f"{unit} is not enabled at boot"


def http_get(host: Any, url: str, user: str = "", password: str = "", ca_file: str = "") -> tuple[int, str]:
    """GET a URL from inside the guest; returns (HTTP status, body)."""
    command = " ".join(shlex.quote(part) for part in ("python3", "-c", _FETCH, url, user, password, ca_file))
    result = host.run(command)
    assert result.rc == 0, f"GET {url} failed in the guest: {result.stderr}"
    answer = json.loads(result.stdout)
    return int(answer["status"]), str(answer["body"])


def metric_families(exposition: str) -> set[str]:
    """Names of the metric families declared in a Prometheus text exposition."""
    return set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.MULTILINE))


def samples(exposition: str, name: str) -> list[str]:
    """Sample lines of one metric (with any labels)."""
    return [line for line in exposition.splitlines() if re.match(rf"{re.escape(name)}(\{{|\s)", line)]


NVIDIA_DEVICE_CLASSES = {
    "char-nvidia-frontend rw",
    "char-nvidiactl rw",
    "char-nvidia-caps rw",
    "char-nvidia-uvm rw",
}
"""The job-exporter unit's DeviceAllow= with the GPU collector on: the NVIDIA device classes, whatever nodes exist."""


def device_allow(props: dict[str, str]) -> set[str]:
    """A unit's DeviceAllow= entries, less the ``char-rtc r`` that systemd adds itself for ProtectClock=yes."""
    return set(props["DeviceAllow"].splitlines()) - {"char-rtc r"}


def current_nvml_status(exposition: str) -> list[str]:
    """The ``status`` label of every ``pai_gpu_nvml_status`` sample that is 1 (exactly one on a healthy exporter)."""
    return [
        re.search(r'status="([^"]*)"', line)[1]  # type: ignore[index]
        for line in samples(exposition, "pai_gpu_nvml_status")
        if float(line.rsplit(" ", 1)[1]) == 1
    ]


def security_exposure(host: Any, unit: str) -> tuple[float, str]:
    """``systemd-analyze security`` overall exposure of a unit and its rating word (OK, MEDIUM, ...)."""
    result = host.run(f"systemd-analyze security --no-pager {shlex.quote(unit)}")
    assert result.rc == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
    assert match, f"no exposure line in:\n{result.stdout}"
    return float(match.group(1)), match.group(2)


def unit_properties(host: Any, unit: str, *names: str) -> dict[str, str]:
    """Selected properties of a unit as systemd reports them (``systemctl show``)."""
    wanted = ",".join(names)
    result = host.run(f"systemctl show --property={shlex.quote(wanted)} {shlex.quote(unit)}")
    assert result.rc == 0, result.stderr
    props: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if "=" in line:
            name, value = line.split("=", 1)
            # List properties (DeviceAllow=, ...) come one line per entry: join them with newlines.
            props[name] = f"{props[name]}\n{value}" if name in props else value
    return props


def assert_drop_in_hardening(host: Any, unit: str, expected: dict[str, str]) -> None:
    """Our hardening drop-in for a packaged unit is in place (managed, 0644) and systemd applies ``expected``."""
    drop_in = host.file(f"/etc/systemd/system/{unit}.d/10-pai-hardening.conf")
    assert drop_in.mode == 0o644
    assert drop_in.content_string.startswith("#\n# Ansible managed")
    assert unit_properties(host, unit, *expected) == expected


def guest(name: str) -> Any:
    """A testinfra host for another guest of the scenario (a module's own guests come from ``testinfra_hosts``)."""
    return testinfra.get_host(ssh(name))


def assert_exposure(host: Any, unit: str) -> None:
    """``systemd-analyze security`` rates the unit at most EXPOSURE_THRESHOLD (OK, with a margin)."""
    exposure, rating = security_exposure(host, unit)
    assert exposure <= EXPOSURE_THRESHOLD, f"{unit}: exposure {exposure} {rating}, above {EXPOSURE_THRESHOLD}"


@dataclass(frozen=True)
class PlayRun:
    """A finished ansible-playbook run: its exit status and its output (stdout and stderr, whitespace collapsed, so
    that messages the YAML callback wrapped over lines can be searched as written)."""

    returncode: int
    output: str


def run_playbook(plays: list[tuple[str, str]], extra_vars: dict[str, Any], timeout: float = 900) -> PlayRun:
    """Apply roles to the scenario's guests with extra variables, as an operator would: each ``(hosts, role)``
    applies the role to the hosts of that pattern. One play, so that a host that fails does not stop the others.
    Used to show that a bad variable fails the play with a message saying what to fix."""
    tasks = "".join(
        f"    - name: Apply {role}\n"
        f"      ansible.builtin.include_role:\n        name: {role}\n"
        f"      when: inventory_hostname in query('ansible.builtin.inventory_hostnames', '{hosts}')\n"
        for hosts, role in plays
    )
    pattern = ":".join(hosts for hosts, _ in plays)
    text = f"- name: Apply roles\n  hosts: {pattern}\n  become: true\n  tasks:\n{tasks}"
    with tempfile.TemporaryDirectory(prefix="pai-molecule-") as tmp:
        playbook = Path(tmp) / "apply.yml"
        playbook.write_text(text, encoding="utf-8")
        return run_playbook_file(playbook, extra_vars, timeout)


def run_playbook_file(playbook: Path, extra_vars: dict[str, Any] | None = None, timeout: float = 900) -> PlayRun:
    """Run a playbook against the scenario's guests (molecule's inventory, with its group variables)."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE", "")
    assert inventory, "MOLECULE_INVENTORY_FILE is not set: run this through molecule verify"
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, "-e", json.dumps(extra_vars or {}), str(playbook)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return PlayRun(result.returncode, " ".join(f"{result.stdout}\n{result.stderr}".split()))


def targets_when_up(
    active_targets: Callable[[], list[dict[str, Any]]], expected: set[tuple[str, str]], timeout: float = 120
) -> list[dict[str, Any]]:
    """Prometheus's active targets once every expected ``(job, instance)`` is up (they are scraped every few
    seconds); fails after ``timeout`` seconds showing each target's health and last error."""
    deadline = time.monotonic() + timeout
    while True:
        active = active_targets()
        health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}
        if all(health.get(target) == "up" for target in expected):
            return active
        assert time.monotonic() < deadline, f"targets not up: {[(t['scrapeUrl'], t['lastError']) for t in active]}"
        time.sleep(2)


def main_pid(host: Any, unit: str) -> str:
    """The unit's main PID (a restart changes it)."""
    return unit_properties(host, unit, "MainPID")["MainPID"]
