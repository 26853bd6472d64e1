"""The capability set the exporter needs to name other users' jobs, tried for real.

The collector runs as ``nobody`` with only the ambient capabilities under test (``setpriv``), against a job whose
process belongs to root and lives in its own network namespace. Reading that process's ``/proc/<pid>/environ``
needs both ptrace read access (``CAP_SYS_PTRACE``) and passing the file's owner-only mode
(``CAP_DAC_READ_SEARCH``); its ``ns/net`` link needs ``CAP_SYS_PTRACE``. Cgroup files need neither.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest

from tests.integration.jobs.conftest import SlurmLikeJob

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NOBODY = "65534"
SCRIPT = """
import json
from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
options = JobsOptions(docker_socket="", containerd_socket="", podman_graph_root="")
collector = JobsCollector(options, CollectorContext(node_name="cap-test"))
print(json.dumps([[s.name, s.labels] for f in collector.collect() for s in f.samples]))
"""


@pytest.fixture(scope="module")
def readable_code() -> Iterator[Path]:
    """The package and prometheus_client copied where ``nobody`` can read them (the checkout may be under /root)."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is needed (Debian package util-linux)")
    root = Path(tempfile.mkdtemp(prefix="pai-jobs-caps-"))
    shutil.copytree(REPO / "collectors" / "pai_monitoring", root / "pai_monitoring")
    shutil.copytree(Path(prometheus_client.__file__).parent, root / "prometheus_client")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def collect_as_nobody(code: Path, caps: str) -> list[tuple[str, dict[str, str]]]:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else os.path.realpath(sys.executable)
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        command += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    result = subprocess.run(
        [*command, python, "-c", SCRIPT],
        capture_output=True, text=True, timeout=60, check=False, cwd="/", env={"PYTHONPATH": str(code)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [(name, labels) for name, labels in json.loads(result.stdout)]


@pytest.fixture
def root_job(slurm_job: SlurmLikeJob) -> Iterator[SlurmLikeJob]:
    """A root process with PAI variables in its own network namespace, inside the Slurm-like job cgroup."""
    env = {"PATH": "/usr/bin:/bin", "PAI_JOB_NAME": f"caps-{os.getpid()}"}
    with subprocess.Popen(["unshare", "--net", "sleep", "600"], env=env) as process:
        try:
            slurm_job.add(process.pid)
            yield slurm_job
        finally:
            process.kill()
            process.wait(timeout=30)


def _job_series(found: list[tuple[str, dict[str, str]]], job: SlurmLikeJob) -> dict[str, dict[str, str]]:
    info = [labels for name, labels in found if name == "task_info" and labels["container_id"] == str(job.job_id)]
    assert len(info) == 1, info
    job_name = info[0]["job_name"]
    return {name: labels for name, labels in found if labels.get("job_name") == job_name}


@pytest.mark.parametrize(
    ("caps", "named", "network"),
    [
        ("", False, False),
        ("+sys_ptrace", False, True),
        ("+dac_read_search", False, False),
        ("+sys_ptrace,+dac_read_search", True, True),
    ],
)
def test_naming_a_job_needs_sys_ptrace_and_dac_read_search(
    readable_code: Path, root_job: SlurmLikeJob, caps: str, named: bool, network: bool
) -> None:
    series = _job_series(collect_as_nobody(readable_code, caps), root_job)
    expected_name = f"caps-{os.getpid()}" if named else str(root_job.job_id)
    assert series["task_cpu_seconds_total"]["job_name"] == expected_name  # cgroup files: no capability needed
    assert ("task_network_receive_bytes_total" in series) is network
