"""Real cgroups, real processes and real podman containers for the jobs collector (root, cgroup v1 or v2 hosts).

Everything created here is named ``pai-jobs-it-<pid>``, ``slurm_paijobs<pid>`` or ``paijobs<pid>_slurmstepd.scope``
so that engineers and CI jobs sharing a machine do not collide, and is removed at the end of the test that made it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pai_monitoring.gpu.collector import GpuCollector, GpuOptions
from pai_monitoring.jobs.collector import JobsCollector, JobsOptions
from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.shared_model import GPU_STATE, GpuState
from tests.support.modules import load_file

REPO = Path(__file__).resolve().parents[3]
CGROUP = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpuacct", "blkio", "pids", "devices", "freezer")
IMAGE = "localhost/pai-jobs-busybox:test"
PREFIX = f"pai-jobs-it-{os.getpid()}"


def cgroup_version() -> int:
    return 2 if (CGROUP / "cgroup.controllers").exists() else 1


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the jobs integration tests need root (cgroups, podman)")


def disk_of(path: Path) -> str:
    """``major:minor`` of the whole disk holding ``path`` (throttle rules take disks, not partitions)."""
    dev = path.stat().st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if (sys_dev / "partition").exists():
        return (sys_dev.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


class SlurmLikeJob:
    """Real cgroups laid out as Slurm lays out a job when several slurmd share a node (the node name here is
    ``paijobs<pid>``), with one step:

    * cgroup/v1: ``/slurm_<node>/uid_<uid>/job_<id>/step_0`` in each controller; slurmstepd in the job's directory
      of the freezer hierarchy (proctrack/cgroup);
    * cgroup/v2: ``/<node>_slurmstepd.scope/job_<id>/step_0/user/task_0``, slurmstepd in ``step_0/slurm``.
    """

    def __init__(self, job_id: int, uid: int = 0) -> None:
        self.job_id = job_id
        node = f"paijobs{os.getpid()}"
        self.version = cgroup_version()
        if self.version == 1:
            self.top = f"slurm_{node}"
            self.job_path = f"{self.top}/uid_{uid}/job_{job_id}"
            self.task_path = f"{self.job_path}/step_0"
            self.dirs = [self.top, f"{self.top}/uid_{uid}", self.job_path, self.task_path]
            self.roots = [(CGROUP / c).resolve() for c in V1_CONTROLLERS if (CGROUP / c).exists()]
        else:
            self.top = f"{node}_slurmstepd.scope"
            self.job_path = f"{self.top}/job_{job_id}"
            self.task_path = f"{self.job_path}/step_0/user/task_0"
            step = f"{self.job_path}/step_0"
            self.dirs = [self.top, self.job_path, step, f"{step}/slurm", f"{step}/user", self.task_path]
            self.roots = [CGROUP]

    def create(self) -> None:
        for root in self.roots:
            for directory in self.dirs:
                (root / directory).mkdir(exist_ok=True)
        if self.version == 2:
            # v2: a process may only sit in a leaf, and each parent must hand the controllers down
            for directory in [CGROUP, *(CGROUP / d for d in self.dirs if not d.endswith(("slurm", "task_0")))]:
                with contextlib.suppress(OSError):
                    (directory / "cgroup.subtree_control").write_text("+cpu +memory +io +pids")

    def add(self, pid: int) -> None:
        """Put a task process in the job's step."""
        for root in self.roots:
            (root / self.task_path / "cgroup.procs").write_text(str(pid))

    def add_stepd(self, pid: int) -> None:
        """Put a process (named ``slurmstepd``) where Slurm keeps the job's step daemon."""
        if self.version == 1:
            (CGROUP / "freezer").resolve().joinpath(self.job_path, "cgroup.procs").write_text(str(pid))
        else:
            (CGROUP / self.job_path / "step_0" / "slurm" / "cgroup.procs").write_text(str(pid))

    def allow_block_accounting(self, disk: str) -> None:
        """cgroup v1 counts block I/O in ``blkio.throttle.*`` only for disks with a rule: set a limit never reached."""
        if self.version != 1:
            return
        blkio = (CGROUP / "blkio").resolve() / self.job_path
        for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
            (blkio / name).write_text(f"{disk} {1 << 50}")

    def remove(self) -> None:
        for root in self.roots:
            for path in reversed(self.dirs):
                for _ in range(50):
                    try:
                        (root / path).rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)


@pytest.fixture
def slurm_job() -> Iterator[SlurmLikeJob]:
    require_root()
    job = SlurmLikeJob(900000 + os.getpid() % 10000)
    job.create()
    try:
        yield job
    finally:
        job.remove()


def host_collector(**options: object) -> JobsCollector:
    """A collector on the real host: /sys, /proc, podman's real storage; no docker socket unless given."""
    merged: dict[str, object] = {"docker_socket": "", "containerd_socket": "", **options}
    return JobsCollector(JobsOptions(**merged), CollectorContext(node_name="it"))  # type: ignore[arg-type]


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def busybox_image() -> str:
    """A one-binary image (Debian's static busybox) imported into podman's local store; no registry needed."""
    require_root()
    if shutil.which("podman") is None:
        pytest.fail("podman is needed: apt-get install -y podman runc (see docs/jobs.md)")
    if podman("image", "exists", IMAGE).returncode == 0:
        return IMAGE
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.fail("a static busybox is needed: apt-get install -y busybox-static")
    with tempfile.TemporaryDirectory(prefix="pai-jobs-image-") as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in ("sh", "sleep", "cat", "dd", "yes", "wget", "ping"):
            (root / "bin" / applet).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True, timeout=60)
        result = subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/sh"]', "-", IMAGE],
            input=tar.stdout, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
    return IMAGE


@contextlib.contextmanager
def container(name: str, image: str, *run_args: str, command: tuple[str, ...] = ("sleep", "600")) -> Iterator[str]:
    """A running podman container; yields its full id and removes it afterwards."""
    result = podman("run", "-d", "--name", name, *run_args, image, *command)
    assert result.returncode == 0, result.stderr
    try:
        yield result.stdout.strip()
    finally:
        podman("rm", "-f", "-t", "0", name)


@pytest.fixture(scope="session")
def nvml_sim_lib() -> Path:
    """The simulated NVML library (a stand-in for GPUs, loaded by the real pynvml), built once."""
    built: Path = load_file(REPO / "sim" / "nvml" / "build.py", "nvml_sim_build_jobs").build()
    return built


def simulated_gpus(lib: Path, scenario: str, workdir: Path, context: CollectorContext | None = None) -> GpuState:
    """Run the real ``gpu`` collector once on the simulated NVML with ``scenario`` (the file format of
    ``sim/nvml/README.md``); its state is published in ``context`` and returned."""
    path = workdir / "nvml-scenario.conf"
    path.write_text(scenario)
    context = context or CollectorContext(node_name="gpu-it")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LD_LIBRARY_PATH", os.pathsep.join([str(lib), os.environ.get("LD_LIBRARY_PATH", "")]))
        patch.setenv("PAI_NVML_SIM_SCENARIO", str(path))
        gpu = GpuCollector(GpuOptions(timeout=10.0), context)
        try:
            list(gpu.collect())
        finally:
            gpu.close()
    state = context.shared.latest(GPU_STATE, max_age=600)
    assert state is not None, "the gpu collector published nothing"
    return state
