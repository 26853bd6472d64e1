"""The sandbox cluster the end-to-end tests run against.

The session creates its own sandbox, ``pai-e2e-ctl``, ``pai-e2e-gpu1``, ``pai-e2e-gpu2`` on the podman network
``pai-e2e`` with ports on 127.0.0.1:29100 + offset, so that a running ``make demo`` (``pai-demo``, 19000 + offset)
is left alone, and removes it at the end. ``PAI_E2E_KEEP=1`` keeps it for a look around (a second run reuses it);
``PAI_E2E_NAME`` and ``PAI_E2E_PORT_BASE`` change the names and ports; ``PAI_E2E_REUSE=1`` skips the deployment when
a sandbox of that name already answers with every target up (for working on the tests).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from sandbox.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (podman guests with systemd, loop devices)")
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        pytest.skip("the sandbox needs podman (installed by tests/hosts/setup.sh on Debian)")
    box = Sandbox(
        name=os.environ.get("PAI_E2E_NAME", "pai-e2e"), port_base=int(os.environ.get("PAI_E2E_PORT_BASE", "29100"))
    )
    try:
        if not (os.environ.get("PAI_E2E_REUSE") == "1" and box.is_up()):
            box.up()
        yield box
    finally:
        if os.environ.get("PAI_E2E_KEEP") != "1":
            box.down()
