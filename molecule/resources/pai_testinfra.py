"""Helpers for the testinfra verifiers of the molecule scenarios.

Everything here runs commands inside a guest through a testinfra ``host``: the guest image has no curl, so HTTP
requests go through the guest's own ``python3``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# docs/security.md: every unit we write (or harden with a drop-in) must be rated OK or better.
EXPOSURE_THRESHOLD = 4.0
REPO = Path(__file__).resolve().parents[2]
SECURITY_DOC = REPO / "docs" / "security.md"

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


def documented_exposure(unit: str, scenario: str) -> float:
    """The exposure docs/security.md lists for a unit measured in a scenario (row ``| `unit` | `scenario` | N |``)."""
    text = SECURITY_DOC.read_text(encoding="utf-8")
    row = rf"^\| `{re.escape(unit)}` \| `{re.escape(scenario)}` \| ([0-9.]+) \|"
    match = re.search(row, text, flags=re.MULTILINE)
    assert match, f"{SECURITY_DOC} has no row for {unit} in {scenario}"
    return float(match.group(1))


def assert_drop_in_hardening(host: Any, unit: str, expected: dict[str, str]) -> None:
    """Our hardening drop-in for a packaged unit is in place (managed, 0644) and systemd applies ``expected``."""
    drop_in = host.file(f"/etc/systemd/system/{unit}.d/10-pai-hardening.conf")
    assert drop_in.mode == 0o644
    assert drop_in.content_string.startswith("#\n# Ansible managed")
    assert unit_properties(host, unit, *expected) == expected


def assert_exposure(host: Any, unit: str, scenario: str) -> None:
    """The unit is rated at most EXPOSURE_THRESHOLD, and docs/security.md shows the value measured here."""
    exposure, rating = security_exposure(host, unit)
    assert exposure <= EXPOSURE_THRESHOLD, f"{unit}: exposure {exposure} {rating}, above {EXPOSURE_THRESHOLD}"
    documented = documented_exposure(unit, scenario)
    assert abs(exposure - documented) < 0.05, (
        f"{unit} in {scenario}: measured {exposure} {rating} but docs/security.md says {documented}; update the table"
    )


@dataclass(frozen=True)
class PlayRun:
    """A finished ansible-playbook run: its exit status and its output (stdout and stderr, whitespace collapsed, so
    that messages the YAML callback wrapped over lines can be searched as written)."""

    returncode: int
    output: str


def run_role(role: str, extra_vars: dict[str, Any], timeout: float = 600) -> PlayRun:
    """Apply a role to the scenario's guests with extra variables, as an operator would.

    Used to show that a bad variable fails the play in preflight with a message saying what to fix."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE", "")
    assert inventory, "MOLECULE_INVENTORY_FILE is not set: run this through molecule verify"
    with tempfile.TemporaryDirectory(prefix="pai-molecule-") as tmp:
        playbook = Path(tmp) / "apply.yml"
        playbook.write_text(f"- name: Apply {role}\n  hosts: all\n  roles:\n    - role: {role}\n", encoding="utf-8")
        env = {
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
            "ANSIBLE_NOCOLOR": "1",
        }
        result = subprocess.run(
            ["ansible-playbook", "-i", inventory, "-e", json.dumps(extra_vars), str(playbook)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    return PlayRun(result.returncode, " ".join(f"{result.stdout}\n{result.stderr}".split()))


def main_pid(host: Any, unit: str) -> str:
    """The unit's main PID (a restart changes it)."""
    return unit_properties(host, unit, "MainPID")["MainPID"]
