"""Bad variables stop a role before it changes anything, with a message that says what to change.

The roles run for real, as local plays on this machine (``ansible-playbook`` against ``localhost``, in check mode so
that nothing here changes even if a check let a case through): no guest is needed to see a preflight check fail.
What needs a running service (a deployment that fails leaves the running service alone, a rule file promtool
rejects, a route amtool rejects) is checked on the guests of ``molecule/default`` and ``molecule/alternative``.

One ``ansible-playbook`` run covers every case: each case is a block that includes the role with its bad variables,
and its rescue records the task that failed and the message. This machine's PID 1 is not systemd, so the play
tells the roles it is (``service_mgr``); every check after that one runs as on a real host.

Ansible comes from the molecule virtualenv (``tests/hosts/setup.sh --venv-only``, which ``make check`` runs).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".cache" / "molecule-venv" / "bin" / "ansible-playbook"
PLAY_TIMEOUT_S = 600
ARCHIVE = "node_exporter-1.5.0.linux-amd64.tar.gz"


@dataclass(frozen=True)
class Case:
    role: str
    variables: dict[str, Any]
    message: str
    """Text the failure must contain (the fail_msg, or the module's message)."""
    stage: str = "preflight"
    """Tasks file of the role where the play must stop."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def task_names(role: str, stage: str) -> set[str]:
    """Names of the tasks of a role's stage, with those of the shared exporter_base stage the role runs."""
    files = [REPO / "roles" / role / "tasks" / f"{stage}.yml"]
    if "exporter_base" in (REPO / "roles" / role / "tasks" / "main.yml").read_text(encoding="utf-8"):
        files += sorted((REPO / "roles" / "exporter_base" / "tasks").glob(f"{stage}*.yml"))
    return {task["name"] for path in files for task in yaml.safe_load(path.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def squatter() -> Iterator[int]:
    """A program (this test process) listening on a port the operator then gives to an exporter."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, squatter: int) -> dict[str, Case]:
    work = tmp_path_factory.mktemp("preflight")
    # The wheelhouse checks come before the credential checks: a directory that holds one pai_monitoring wheel.
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "pai_monitoring-0.1.0-py3-none-any.whl").write_bytes(b"")
    # A release archive whose real sha256 is not the one the operator pinned.
    release = work / "release"
    (release / "node_exporter-1.5.0.linux-amd64").mkdir(parents=True)
    (release / "node_exporter-1.5.0.linux-amd64" / "node_exporter").write_text("#!/bin/sh\n")
    with tarfile.open(work / ARCHIVE, "w:gz") as archive:
        archive.add(release / "node_exporter-1.5.0.linux-amd64", arcname="node_exporter-1.5.0.linux-amd64")
    (work / "downloads").mkdir()
    return {
        "job_exporter_bad_listen_address": Case(
            "job_exporter",
            {"job_exporter_web_listen_address": "localhost:99999"},
            "job_exporter_web_listen_address='localhost:99999' is not HOST:PORT with a port in 1-65535",
        ),
        "job_exporter_port_held_by_another_program": Case(
            "job_exporter",
            {"job_exporter_web_listen_address": f"127.0.0.1:{squatter}"},
            f"Port {squatter} is already in use",
        ),
        "job_exporter_port_of_another_exporter": Case(
            "job_exporter",
            {"job_exporter_web_listen_address": ":9100"},
            "uses port 9100, which node_exporter or the watchdog uses",
        ),
        "node_exporter_archive_without_checksum": Case(
            "node_exporter",
            {"node_exporter_install_method": "archive", "node_exporter_archive_url": "https://example.org/ne.tar.gz"},
            "node_exporter_archive_sha256 (its 64-hex-digit sha256",
        ),
        "node_exporter_archive_with_a_wrong_checksum": Case(
            "node_exporter",
            {
                "node_exporter_install_method": "archive",
                "node_exporter_archive_url": f"file://{work / ARCHIVE}",
                "node_exporter_archive_sha256": "0" * 64,
                "node_exporter_archive_cache_dir": str(work / "downloads"),
                "node_exporter_web_listen_address": f"127.0.0.1:{free_port()}",
            },
            "checksum",
            stage="install",
        ),
        "prometheus_scrape_timeout_longer_than_the_interval": Case(
            "prometheus",
            {"prometheus_scrape_interval": "1m", "prometheus_scrape_timeout": "1m30s"},
            "prometheus_scrape_timeout (1m30s) must not be longer than prometheus_scrape_interval (1m)",
        ),
        "watchdog_missing_kubeconfig": Case(
            "watchdog",
            {"watchdog_kubeconfig_src": "/nonexistent/kubeconfig", "watchdog_wheelhouse_dir": str(wheelhouse)},
            "Not found on the controller: /nonexistent/kubeconfig",
        ),
    }


def playbook(cases: dict[str, Case], results: Path) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = [
        {
            "name": "Tell the roles that systemd manages this machine (its PID 1 is not systemd)",
            "ansible.builtin.set_fact": {"ansible_facts": "{{ ansible_facts | combine({'service_mgr': 'systemd'}) }}"},
        },
    ]
    for name, case in cases.items():
        # What failed, as Ansible reports it in a rescue: the task's name and the module's (or assert's) message.
        record = (
            "{{ __preflight_results | default({}) | combine({" + json.dumps(name) + ": {"
            "'failed_task': ansible_failed_task.name, 'message': ansible_failed_result.msg | default('')}}) }}"
        )
        tasks.append(
            {
                "name": f"Case {name}",
                "block": [
                    {
                        "name": f"Apply {case.role}",
                        "ansible.builtin.include_role": {"name": case.role},
                        "vars": case.variables,
                    }
                ],
                "rescue": [
                    {
                        "name": f"Record how case {name} failed",
                        "ansible.builtin.set_fact": {"__preflight_results": record},
                    }
                ],
            }
        )
    tasks.append(
        {
            "name": "Write the results",
            "ansible.builtin.copy": {
                "content": "{{ __preflight_results | default({}) | to_json }}",
                "dest": str(results),
                "mode": "0644",
            },
            "check_mode": False,
        }
    )
    return [
        {
            "name": "Roles with bad variables",
            "hosts": "localhost",
            "connection": "local",
            "check_mode": True,
            "gather_facts": True,
            "tasks": tasks,
        }
    ]


@pytest.fixture(scope="module")
def outcomes(cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    if not ANSIBLE_PLAYBOOK.is_file():
        pytest.fail(f"{ANSIBLE_PLAYBOOK} is missing: run tests/hosts/setup.sh --venv-only (make check does)")
    work = tmp_path_factory.mktemp("preflight-play")
    play = work / "play.yml"
    results = work / "results.json"
    play.write_text(json.dumps(playbook(cases, results), indent=2), encoding="utf-8")
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
        # Ansible's own files stay in the test's directory (nothing in ~/.ansible).
        "ANSIBLE_HOME": str(work / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(work / "ansible-remote"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    }
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(play)],
        capture_output=True,
        text=True,
        timeout=PLAY_TIMEOUT_S,
        env=env,
        check=False,
    )
    assert run.returncode == 0, f"the play itself failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    recorded: dict[str, dict[str, str]] = json.loads(results.read_text(encoding="utf-8"))
    return recorded


CASE_NAMES = [
    "job_exporter_bad_listen_address",
    "job_exporter_port_held_by_another_program",
    "job_exporter_port_of_another_exporter",
    "node_exporter_archive_without_checksum",
    "node_exporter_archive_with_a_wrong_checksum",
    "prometheus_scrape_timeout_longer_than_the_interval",
    "watchdog_missing_kubeconfig",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_variable_stops_the_role_with_a_message_saying_what_to_change(
    name: str, cases: dict[str, Case], outcomes: dict[str, dict[str, str]]
) -> None:
    case = cases[name]
    assert name in outcomes, f"{case.role} with {case.variables} did not fail"
    outcome = outcomes[name]
    assert outcome["failed_task"] in task_names(case.role, case.stage), (
        f"{case.role} stopped in {outcome['failed_task']!r}, not in its {case.stage} tasks"
    )
    message = " ".join(outcome["message"].split())
    assert case.message.lower() in message.lower(), message


def test_an_archive_that_fails_its_checksum_is_not_kept(
    cases: dict[str, Case], outcomes: dict[str, dict[str, str]]
) -> None:
    case = cases["node_exporter_archive_with_a_wrong_checksum"]
    assert "node_exporter_archive_with_a_wrong_checksum" in outcomes
    cache = Path(case.variables["node_exporter_archive_cache_dir"])
    assert not (cache / ARCHIVE).exists(), "an archive that failed its checksum must not stay in the cache"
