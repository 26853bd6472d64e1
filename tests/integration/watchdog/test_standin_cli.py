"""The stand-in as the demo runs it: ``python -m kube_apiserver`` from ``sim/``, changed through its control port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.exporter import REPO, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    scenario = tmp_path / "scenario.yml"
    scenario.write_text(
        yaml.safe_dump(
            {"nodes": [{"name": "node1", "ip": "10.0.0.1", "gpus": 4}], "pods": [{"name": "p", "node": "node1"}]}
        ),
        encoding="utf-8",
    )
    control_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kube_apiserver", "--port", "0", "--scenario", str(scenario),
         "--control-port", str(control_port)],
        cwd=REPO / "sim", env={**os.environ, "PYTHONPATH": ""}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "listening http://127.0.0.1:PORT control=PORT"
        assert line.startswith("listening "), process.stderr.read() if process.stderr else line
        yield line.split()[1], f"http://127.0.0.1:{control_port}", scenario
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        data = json.loads(response.read())
    assert isinstance(data, dict)
    return data


def ready_of(api: str) -> str:
    nodes = get_json(f"{api}/api/v1/nodes")["items"]
    assert isinstance(nodes, list)
    return str({c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"])


def test_control_port_makes_a_node_not_ready(standin: tuple[str, str, Path]) -> None:
    api, control, _scenario = standin
    assert ready_of(api) == "True"
    request = urllib.request.Request(f"{control}/nodes/node1", data=b'{"ready": false}', method="PATCH")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert ready_of(api) == "False"
    assert get_json(f"{api}/version")["gitVersion"] == "v1.30.0-standin"
