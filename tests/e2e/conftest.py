"""The sandbox cluster the end-to-end tests run against.

The session creates its own sandbox, ``pai-e2e-ctl``, ``pai-e2e-mon2`` (the second monitoring host: Prometheus
replicas and an Alertmanager cluster, ``test_ha.py``), ``pai-e2e-gpu1``, ``pai-e2e-gpu2`` (Debian 13) on the podman
network ``pai-e2e`` with ports on 127.0.0.1:29100 + offset, so that a running ``make demo`` (``pai-demo``, 19000 +
offset) is left alone, and removes it at the end. Whatever an earlier, killed run left under that name (guests,
the network, ``conmon`` processes holding the ports, mounts, loop devices) is removed first.

``PAI_E2E_KEEP=1`` keeps the sandbox for a look around; ``PAI_E2E_REUSE=1`` skips the deployment when a sandbox of that
name already answers with every target up (for working on the tests); ``PAI_E2E_NAME`` and ``PAI_E2E_PORT_BASE``
change the names and ports.

The modules run in file order, except ``test_readme_recipe.py``, which runs first (it has guests of its own, gone
before this sandbox is made), and those that leave the sandbox changed, which run last in this order: ``test_ha.py``
(the tier's own alerts about the lost host stay pending for the 5 minutes their rates look back),
``test_gpu_hotplug.py`` (a fifth GPU comes and goes on a node, which NodeGpuCountChanged remembers for a day),
``test_site_playbook.py`` (adds a GPU node) and ``test_lifecycle.py`` (stops, redeploys and deletes the suite).
``test_site_playbook.py`` (adds a GPU node) and ``test_lifecycle.py`` (stops, redeploys and deletes the suite).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from sandbox.sandbox import Phases, Sandbox

# Modules that must run after every other end-to-end module, in this order.
LAST = ("test_ha.py", "test_gpu_hotplug.py", "test_site_playbook.py", "test_lifecycle.py")
# Modules with guests of their own, run before the others so that no two sandboxes share the machine at once.
FIRST = ("test_readme_recipe.py",)

_PHASES: list[Phases] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if item.path.parent.name != "e2e":
            return 0
        return -1 if name in FIRST else LAST.index(name) + 1 if name in LAST else 0

    items.sort(key=rank)  # stable: the order within a module, and of the other modules, stays


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for phases in _PHASES:
        terminalreporter.write_sep("-", "end-to-end sandbox: time per phase")
        terminalreporter.write_line(phases.table())


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    # Selecting the e2e tier without what it needs fails: a skipped tier would read as a passed one.
    if os.geteuid() != 0:
        pytest.fail("the sandbox needs root (podman guests with systemd, loop devices)")
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        pytest.fail("the sandbox needs podman (installed by tests/hosts/setup.sh on Debian)")
    box = Sandbox(
        name=os.environ.get("PAI_E2E_NAME", "pai-e2e"),
        port_base=int(os.environ.get("PAI_E2E_PORT_BASE", "29100")),
        monitoring_hosts=2,
    )
    try:
        if not (os.environ.get("PAI_E2E_REUSE") == "1" and box.is_up()):
            # A fresh sandbox for every session: nothing of an earlier (perhaps killed) run carries over.
            box.down()
            _PHASES.append(box.up())
        yield box
    finally:
        if os.environ.get("PAI_E2E_KEEP") != "1":
            box.down()
