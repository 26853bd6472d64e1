"""A sandbox cluster of real systemd hosts on this machine, deployed with the site playbook.

The sandbox is a control/monitoring guest, optionally a second monitoring guest (``--monitoring 2``: Prometheus and
Alertmanager on both, one Alertmanager cluster, as the roles deploy two hosts in ``monitoring``), and GPU-node
guests: podman containers that boot systemd from the guest images ``tests/hosts/setup.sh`` builds (Debian 12; the
second GPU node Debian 13, so that both supported releases run in every sandbox) on a podman network of their own.
Ansible reaches them over ssh (``.cache/ssh/config``: the guest's sshd is started per connection through ``podman
exec``). The GPU nodes get the simulated NVML library (``sim/nvml/``, a stand-in for GPUs) and a few running jobs
in Slurm-style cgroups; the control guest runs the Kubernetes API stand-in (``sim/kube_apiserver/``),
VictoriaMetrics as a ``remote_write`` target and a small webhook receiver that records what Alertmanager sends.
Everything else is installed by ``ansible-playbook pai.monitoring.site``, from the collection built from this
checkout and installed into the sandbox's own collections path, with an inventory generated here.

Used by ``sandbox/demo.sh`` (``make demo``) with the names ``pai-demo-*`` and by the end-to-end tests with
``pai-e2e-*``; both can run at once. Only the standard library is used, so any ``python3`` runs it.

    python3 sandbox/sandbox.py up|down|status [--name pai-demo] [--port-base 19000] [--monitoring 1|2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The guest images of tests/hosts/setup.sh, one per supported Debian release.
IMAGES = {"bookworm": "localhost/bookworm-systemd:latest", "trixie": "localhost/trixie-systemd:latest"}
DEFAULT_RELEASE = "bookworm"
# GPU nodes (by index) that run Debian 13: the second one, so that every sandbox has both releases.
TRIXIE_GPU_INDEXES = frozenset({1})
SSH_CONFIG = REPO / ".cache" / "ssh" / "config"
# Kernel command line of the guests' systemd: the cgroup v1 hierarchies of this machine (jobs get cgroups in each
# controller, as under Slurm; Debian 13's systemd 257 needs the force flag for them), no getty on the host's tty1
# (a privileged guest sees /dev/tty1).
GUEST_SYSTEMD_CMDLINE = (
    "systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1 "
    "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1 systemd.mask=getty@tty1.service"
)
ANSIBLE_BIN = REPO / ".cache" / "molecule-venv" / "bin"
HTTP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 120.0
PLAYBOOK_TIMEOUT_S = 1200.0
SCRATCH_SIZE_MIB = 64
GPUS_PER_NODE = 4
GIB = 1024**3

# Paths inside the guests (written by sandbox/prepare.yml).
NVML_DIR = "/opt/pai-sandbox/nvml"
NVML_SCENARIO = "/etc/pai-sandbox/nvml.conf"
KUBE_SCENARIO = "/etc/pai-sandbox/kube-scenario.yml"
SCRATCH_MOUNT = "/srv/scratch"

# Ports inside a guest, published on 127.0.0.1 of this machine at port_base + offset: service -> (port, offset).
CTL_PORTS = {
    "prometheus": (9090, 90),
    "alertmanager": (9093, 93),
    "victoria_metrics": (8428, 28),
    "webhook": (9095, 95),
    "kube_control": (6444, 44),
}
# The second monitoring guest's Prometheus and Alertmanager; the offsets leave room for no third one.
MON_PORTS = {"prometheus": (9090, 91), "alertmanager": (9093, 94)}
MAX_MONITORING_HOSTS = 2

# Jobs started on each GPU node: (Slurm job id, job name, user, virtual cluster, GPUs, own network namespace).
# A job with its own network namespace (systemd PrivateNetwork=) has per-job network metrics; the others share the
# node's, as host-network jobs do.
JOBS: dict[int, tuple[tuple[int, str, str, str, str, bool], ...]] = {
    0: (
        (101, "alice~resnet50", "alice", "default", "0,1", False),
        (102, "bob~bert-large", "bob", "research", "2", True),
    ),
    1: ((201, "carol~llama-finetune", "carol", "default", "0,1,2,3", True),),
    2: ((301, "dave~vit-pretrain", "dave", "research", "0,1", True),),
}

# A job the e2e tier starts itself, as a fault (tests/e2e/test_jobstats.py), on the first GPU node: it shares GPU 2
# with bob's job (GPU sharing, as Slurm's shards or Kubernetes time-slicing give) and runs kernels there, and holds
# GPU 3 without ever running a kernel on it, as a job that asked for more GPUs than it uses does. A healthy sandbox
# has no such job, so it stays quiet; with it, PaiJobGpuIdle fires for GPU 3 and `pai-jobstats` gives its hint.
IDLE_JOB = (103, "erin~notebook", "erin", "default", "2,3", False)
IDLE_JOB_UNUSED_GPUS = frozenset({3})
NVLINKS = 18  # an H100 SXM5 has 18 NVLink 4 links


# The shipped GpuXidFatalError with a window of 30 s instead of an hour (tests/unit/test_sandbox_inventory.py
# checks that it is the shipped expression otherwise).
XID_FATAL_EXPR = """\
(time() - pai_gpu_xid_last_seen_timestamp_seconds{xid=~"48|64|79|95"} < 30)
  * on (instance, minor_number) group_left (job_name, username) instance_minor_number:task_gpu_percent:jobs
or on (instance, minor_number)
(time() - pai_gpu_xid_last_seen_timestamp_seconds{xid=~"48|64|79|95"} < 30)"""

# The shipped PaiJobGpuIdle with the worst minute looked for over 15 s instead of 10 minutes, so that the alert
# resolves within the test once the idle job has ended: over 10 minutes the ended job's last samples would keep it
# firing that long (tests/unit/test_sandbox_inventory.py checks that it is the shipped expression otherwise).
JOB_GPU_IDLE_EXPR = """\
(max_over_time(task_gpu_percent[15s]) < 1)
  * on (instance, minor_number) group_left (node_name, index, uuid)
(0 * pai_gpu_lost{minor_number!="unknown"} + 1)"""


def alert_overrides() -> dict[str, dict[str, Any]]:
    """``prometheus_alert_overrides`` of the sandbox: the faults the e2e tier injects fire and resolve in seconds,
    and what a healthy sandbox cannot satisfy is off, each with the reason."""
    short_for = {"for": "10s"}
    # The injected faults' alerts that hold through data gaps (keep_firing_for: 10m in the shipped rules) hold for
    # 10 s here, so that they resolve within the test's timeouts.
    short_for_and_hold = {"for": "10s", "keep_firing_for": "10s"}
    # Alerts that a healthy sandbox cannot satisfy, and why. Each is off in the sandbox only; everywhere else it
    # means what it says. The guests are containers on this machine and share its kernel:
    sandbox_cannot_satisfy: dict[str, dict[str, Any]] = {
        # the kernel's clock state is this machine's, which does not synchronise its clock;
        "NodeClockNotSynchronising": {"enabled": False},
        # node_vmstat_oom_kill counts OOM kills of the whole machine, so every guest reports any OOM kill of
        # any other work on it;
        "NodeOomKillDetected": {"enabled": False},
        # /proc/stat is the machine's, and the other work on it (builds, tests of other worktrees) keeps its
        # CPUs busy for minutes at a time.
        "NodeCPUUsage": {"enabled": False},
    }
    return {
        **sandbox_cannot_satisfy,
        "JobExporterNotUp": short_for,
        "NvidiaSmiDoubleEccError": short_for_and_hold,
        "GpuUsedByExternalProcess": short_for_and_hold,
        "NodeNotReady": short_for_and_hold,
        "NodeFilesystemAlmostOutOfSpace": short_for_and_hold,
        # The shipped rule keeps a fatal Xid firing for an hour; here 30 s, so that it resolves in the test.
        "GpuXidFatalError": {"for": "0s", "keep_firing_for": "10s", "expr": XID_FATAL_EXPR},
        # An idle job is a fault here (the test starts one: Sandbox.start_idle_job): it pages after 10 s instead of
        # 2 h, and resolves seconds after the job ends.
        "PaiJobGpuIdle": {"for": "10s", "keep_firing_for": "10s", "expr": JOB_GPU_IDLE_EXPR},
    }


def gpm_lines(gpu: int, busy: int, *, nvlink: bool) -> list[str]:
    """Scenario lines of one GPU's profiling (GPM) and link counters: activity that follows the GPU's utilisation
    ``busy`` (percent) as a mixed-precision training job's does (fewer SMs active than the utilisation says, tensor
    cores about half the time, FP64 unused), NVLink traffic only where a job spans several GPUs, healthy links
    (every link up, no error counted) and cumulative link counters since the driver loaded."""
    gpm = {
        "graphics": busy,
        "sm": busy * 85 // 100,
        "sm_occupancy": busy * 45 // 100,
        "tensor": busy // 2,
        "hmma_tensor": busy // 2,
        "imma_tensor": 0,
        "dfma_tensor": 0,
        "dmma_tensor": 0,
        "integer": busy // 5,
        "fp64": 0,
        "fp32": busy * 3 // 10,
        "fp16": busy // 10,
        "dram_bw": busy * 6 // 10,
        # MiB/s
        "pcie_tx": 40 * busy,
        "pcie_rx": 120 * busy,
        "nvlink_tx": 2000 * busy if nvlink else 0,
        "nvlink_rx": 2000 * busy if nvlink else 0,
    }
    lines = [f"gpu.{gpu}.gpm.supported = 1"]
    lines += [f"gpu.{gpu}.gpm.{metric} = {value}" for metric, value in gpm.items()]
    lines.append(f"gpu.{gpu}.nvlink.count = {NVLINKS}")
    per_link_kib = (1 << 30) * busy if nvlink else 1 << 20  # KiB since the driver loaded
    for link in range(NVLINKS):
        lines += [f"gpu.{gpu}.nvlink.{link}.{direction}_kib = {per_link_kib}" for direction in ("tx", "rx")]
    lines += [f"gpu.{gpu}.pcie.tx_bytes = {(1 << 40) + (busy << 36)}"]
    lines += [f"gpu.{gpu}.pcie.rx_bytes = {(3 << 40) + (busy << 37)}"]
    return lines


def log(message: str) -> None:
    print(f"[sandbox {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT_S,
    quiet: bool = False,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; its output is captured and shown only when it fails."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input_text, env=env
    )
    if check and result.returncode != 0:
        if not quiet:
            sys.stderr.write(result.stdout + result.stderr)
        msg = f"{shlex.join(argv)} exited {result.returncode}"
        raise RuntimeError(msg)
    return result


def ansible_environment() -> dict[str, str]:
    """Environment of every ansible-playbook run against the guests: ssh with pipelining and shared connections,
    facts gathered once per host and run, Ansible's own state under .cache (nothing in ~/.ansible)."""
    cache = REPO / ".cache"
    return {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        # the checkout as the collection pai.monitoring, whose filters the roles use (tests/hosts/setup.sh)
        "ANSIBLE_COLLECTIONS_PATH": str(cache / "collections"),
        "ANSIBLE_HOME": str(cache / "ansible-home"),
        "ANSIBLE_PIPELINING": "true",
        # A connection starts with `podman exec`, which waits for podman's lock while other podman commands run.
        "ANSIBLE_TIMEOUT": "120",
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cache / "ssh" / "cp"),
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "ANSIBLE_FORCE_COLOR": "false",
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "PATH": f"{ANSIBLE_BIN}:{os.environ.get('PATH', '')}",
    }


def conmon_container_names(pid: int) -> list[str]:
    """The container names a ``conmon`` process was started for (its ``-n``/``--name`` arguments)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-n", "--name")]


def mounts_below(directory: Path) -> list[str]:
    """Mount points below a directory, deepest first."""
    prefix = f"{directory.resolve()}/"
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def loop_devices_below(directory: Path) -> list[str]:
    """Loop devices whose backing file is (or was, before it was deleted) below a directory."""
    prefix = f"{directory.resolve()}/"
    out = run(["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"], check=False).stdout
    devices = []
    for line in out.splitlines():
        name, _, back = line.partition(" ")
        if back.removesuffix(" (deleted)").removesuffix("\\x20(deleted)").startswith(prefix):
            devices.append(name)
    return devices


@dataclass(frozen=True)
class Guest:
    name: str
    role: str
    """``ctl`` (control and monitoring), ``mon`` (a further monitoring host) or ``gpu``."""
    index: int = 0
    release: str = DEFAULT_RELEASE
    """Debian release of the guest's image (a key of ``IMAGES``)."""


@dataclass
class Phases:
    """Wall time of each phase of a run, printed as it ends and as a table at the end."""

    started: float = field(default_factory=time.monotonic)
    times: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        log(f"{name} ...")
        try:
            yield
        finally:
            seconds = time.monotonic() - start
            self.times.append((name, seconds))
            log(f"{name}: {seconds:.0f}s")

    def table(self) -> str:
        width = max(len(name) for name, _ in self.times)
        rows = [f"  {name:<{width}}  {seconds:6.0f}s" for name, seconds in self.times]
        rows.append(f"  {'total':<{width}}  {time.monotonic() - self.started:6.0f}s")
        return "\n".join(rows)


@dataclass
class Sandbox:
    """One sandbox cluster, named ``<name>-ctl``, ``<name>-gpu1``, ... on the podman network ``<name>``."""

    name: str = "pai-demo"
    port_base: int = 19000
    gpu_nodes: int = 2
    monitoring_hosts: int = 1
    """Hosts in the inventory group ``monitoring``: the control guest, and with 2 the guest ``<name>-mon2``."""
    internal: bool = False
    """An offline sandbox: its podman network is ``--internal`` (no route out, no DNS) and no port is published
    (the guests are reached through ``podman exec``, as Ansible's ssh reaches them)."""
    state_dir: Path = field(init=False)
    _collection_installed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not 1 <= self.monitoring_hosts <= MAX_MONITORING_HOSTS:
            msg = f"monitoring_hosts must be 1 to {MAX_MONITORING_HOSTS}, not {self.monitoring_hosts}"
            raise ValueError(msg)
        self.state_dir = REPO / ".cache" / "sandbox" / self.name

    # --- naming -------------------------------------------------------------------------------------------------

    @property
    def ctl(self) -> Guest:
        return Guest(f"{self.name}-ctl", "ctl")

    def gpu(self, index: int) -> Guest:
        release = "trixie" if index in TRIXIE_GPU_INDEXES else DEFAULT_RELEASE
        return Guest(f"{self.name}-gpu{index + 1}", "gpu", index, release)

    @property
    def monitoring_guests(self) -> list[Guest]:
        """The hosts of ``monitoring``: the control guest first, then ``<name>-mon2``."""
        return [self.ctl, *(Guest(f"{self.name}-mon{i + 1}", "mon", i) for i in range(1, self.monitoring_hosts))]

    @property
    def guests(self) -> list[Guest]:
        return [*self.monitoring_guests, *(self.gpu(i) for i in range(self.gpu_nodes))]

    def guest(self, name: str) -> Guest:
        return next(g for g in self.guests if g.name == name)

    @staticmethod
    def published(guest: Guest) -> dict[str, tuple[int, int]]:
        """The ports a guest publishes on this machine: service -> (port in the guest, offset from port_base)."""
        return {"ctl": CTL_PORTS, "mon": MON_PORTS}.get(guest.role, {})

    def port(self, service: str, guest: Guest | None = None) -> int:
        """This machine's port for a service of a guest (the control guest by default)."""
        return self.port_base + self.published(guest or self.ctl)[service][1]

    def url(self, service: str, guest: Guest | None = None) -> str:
        return f"http://127.0.0.1:{self.port(service, guest)}"

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.yml"

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def up(self, *, prepare_machine: bool = True) -> Phases:
        """Create or reuse the guests and deploy the suite; returns the wall time of each phase."""
        phases = Phases()
        if prepare_machine:
            with phases.phase("prepare this machine (tests/hosts/setup.sh)"):
                self.prepare_machine()
        with phases.phase("guests"):
            self.clean_leftovers()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.ensure_network()
            for guest in self.guests:
                self.ensure_guest(guest)
            self.write_inventory()
            self.write_kubeconfig()
            self.copy_wheelhouse()
        with phases.phase("sandbox/prepare.yml (jobs, simulated GPUs, Kubernetes API stand-in)"):
            self.playbook(REPO / "sandbox" / "prepare.yml")
            for i in range(self.gpu_nodes):
                self.write_gpu_scenario(self.gpu(i))
        with phases.phase("playbooks/site.yml"):
            self.playbook(REPO / "playbooks" / "site.yml")
        with phases.phase("every target up"):
            self.wait_targets_up()
        log(f"sandbox {self.name} is up")
        return phases

    def add_gpu_node(self) -> tuple[Guest, str]:
        """Grow the sandbox by one GPU node: a new guest and the inventory, prepare.yml, then ONE run of the site
        playbook over every host. Returns the guest and the site playbook's output."""
        self.gpu_nodes += 1
        guest = self.gpu(self.gpu_nodes - 1)
        self.ensure_guest(guest)
        self.write_inventory()
        log(f"adding {guest.name}: preparing it, then running playbooks/site.yml")
        # The monitoring guests too: they learn the new node's address (/etc/hosts), as their Prometheus scrape it.
        hosts = [guest, *self.monitoring_guests]
        self.playbook(REPO / "sandbox" / "prepare.yml", limit=",".join(g.name for g in hosts))
        self.write_gpu_scenario(guest)
        return guest, self.playbook(REPO / "playbooks" / "site.yml", capture=True)

    def down(self) -> None:
        names = self.container_names()
        if names:
            log(f"removing guests {' '.join(names)}")
            run(["podman", "rm", "-f", "-t", "2", *names], check=False, timeout=180)
        if run(["podman", "network", "exists", self.name], check=False).returncode == 0:
            log(f"removing network {self.name}")
            run(["podman", "network", "rm", "-f", self.name], check=False)
        self.clean_leftovers(left_by="this sandbox")
        if self.state_dir.exists():
            log(f"removing {self.state_dir}")
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def is_up(self) -> bool:
        """True when Prometheus answers with every target of this sandbox's guests up."""
        try:
            targets = self.targets()
        except OSError:
            return False
        return len(targets) >= self.expected_targets() and all(t["health"] == "up" for t in targets)

    def status(self) -> int:
        """Print the guests and every Prometheus target with its health; 0 when every target is up."""
        result = run(
            ["podman", "ps", "-a", "--filter", f"label=pai.sandbox={self.name}", "--format", "{{.Names}}\t{{.Status}}"],
            check=False,
        )
        print(result.stdout.strip() or f"no guests of sandbox {self.name}")
        try:
            targets = self.targets()
        except OSError:
            print(f"Prometheus does not answer at {self.url('prometheus')}")
            return 1
        for target in targets:
            print(f"{target['labels']['job']:<18} {target['labels']['instance']:<28} {target['health']}")
        return 0 if targets and all(t["health"] == "up" for t in targets) else 1

    def container_names(self) -> list[str]:
        """Every container of this sandbox that podman knows, running or not."""
        result = run(
            ["podman", "ps", "-a", "--filter", f"label=pai.sandbox={self.name}", "--format", "{{.Names}}"], check=False
        )
        return result.stdout.split()

    # --- what a killed run leaves behind ------------------------------------------------------------------------

    def clean_leftovers(self, left_by: str = "an earlier run") -> None:
        """Remove what a run killed half-way can leave, so that the next run starts instead of failing on it:
        ``conmon`` processes of guests podman no longer lists that still hold the published ports, scratch
        filesystems still mounted or loop devices still attached after their guest is gone."""
        known = set(self.container_names())
        for pid, name in self.port_holders():
            if name == "conmon" and not known & set(conmon_container_names(pid)):
                log(f"stopping conmon {pid}: its guest is gone but it still holds a port of sandbox {self.name}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        in_use = {self.state_dir / f"scratch-{name}" for name in known}
        for mount in mounts_below(self.state_dir):
            if Path(mount) not in in_use:
                log(f"unmounting {mount}, left by {left_by}")
                run(["umount", "-l", mount], check=False)
        mounted = {line.split()[0] for line in Path("/proc/self/mounts").read_text().splitlines()}
        for device in loop_devices_below(self.state_dir):
            if device not in mounted:
                log(f"detaching {device}, left by {left_by}")
                run(["losetup", "-d", device], check=False)

    def port_holders(self) -> list[tuple[int, str]]:
        """(PID, process name) of every process listening on one of this sandbox's published ports."""
        holders: list[tuple[int, str]] = []
        # Every port a sandbox of this name can publish, whatever its number of monitoring guests; none offline.
        for _, offset in () if self.internal else (*CTL_PORTS.values(), *MON_PORTS.values()):
            port = self.port_base + offset
            out = run(["ss", "-Htlnp", f"sport = :{port}"], check=False).stdout
            for name, pid in re.findall(r'\(\("([^"]+)",pid=([0-9]+)', out):
                holders.append((int(pid), name))
        return sorted(set(holders))

    # --- machine and guests -------------------------------------------------------------------------------------

    def prepare_machine(self) -> None:
        """Apt packages, guest images, ansible virtualenv, wheelhouse, NVML library, ssh (tests/hosts/setup.sh)."""
        subprocess.run([str(REPO / "tests" / "hosts" / "setup.sh")], check=True, timeout=PLAYBOOK_TIMEOUT_S)

    def ensure_network(self) -> None:
        if run(["podman", "network", "exists", self.name], check=False).returncode != 0:
            log(f"creating podman network {self.name}")
            internal = ["--internal"] if self.internal else []
            run(["podman", "network", "create", *internal, "--label", f"pai.sandbox={self.name}", self.name])

    def scratch_dir(self, guest: Guest) -> Path:
        return self.state_dir / f"scratch-{guest.name}"

    def ensure_scratch(self, guest: Guest) -> Path:
        """A small ext4 filesystem on a loop device, for the 'filesystem nearly full' fault."""
        mount = self.scratch_dir(guest)
        if os.path.ismount(mount):
            return mount
        image = self.state_dir / f"scratch-{guest.name}.img"
        mount.mkdir(parents=True, exist_ok=True)
        if not image.exists():
            with image.open("wb") as handle:
                handle.truncate(SCRATCH_SIZE_MIB * 1024 * 1024)
            run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
        run(["mount", "-o", "loop", str(image), str(mount)])
        return mount

    def ensure_guest(self, guest: Guest) -> None:
        state = run(["podman", "inspect", "--format", "{{.State.Status}}", guest.name], check=False)
        if state.returncode == 0:
            if state.stdout.strip() != "running":
                log(f"starting existing guest {guest.name}")
                run(["podman", "start", guest.name])
            else:
                log(f"reusing running guest {guest.name}")
            return
        log(f"creating guest {guest.name}")
        argv = [
            "podman",
            "run",
            "-d",
            "--stop-timeout",
            "2",
            "--name",
            guest.name,
            "--hostname",
            guest.name,
            "--network",
            self.name,
            "--label",
            f"pai.sandbox={self.name}",
            # Privileged with a private cgroup namespace: the guest's systemd owns writable cgroup v1 hierarchies,
            # so jobs get Slurm-style cgroups of their own and the exporters see the guest's tree from its root.
            "--privileged",
            "--cgroupns=private",
            # The guest's systemd mounts the hierarchies itself, inside its cgroup namespace. podman's systemd mode
            # would bind-mount this machine's whole name=systemd tree instead: every guest's systemd would then put
            # its units at the same places of that shared tree and, trimming what it takes for its own empty
            # cgroups, delete the other guests' cgroups, after which `podman exec` into them fails. What systemd
            # mode otherwise provides is given here: tmpfs mounts, the stop signal, the container marker.
            "--systemd=false",
            "--tmpfs=/sys/fs/cgroup",
            "--tmpfs=/run",
            "--tmpfs=/run/lock",
            "--tmpfs=/tmp",
            "--stop-signal=SIGRTMIN+3",
            "--env=container=podman",
            f"--env=SYSTEMD_PROC_CMDLINE={GUEST_SYSTEMD_CMDLINE}",
        ]
        for service, (inner, _) in ({} if self.internal else self.published(guest)).items():
            argv += ["-p", f"127.0.0.1:{self.port(service, guest)}:{inner}"]
        if guest.role == "gpu":
            argv += ["-v", f"{self.ensure_scratch(guest)}:{SCRATCH_MOUNT}"]
        run([*argv, IMAGES[guest.release], "/sbin/init"])

    def copy_wheelhouse(self) -> None:
        """The wheels the control guest's stand-in virtualenv installs from (the guests reach no Python index)."""
        self.exec(self.ctl, ["rm", "-rf", "/opt/pai-sandbox/wheelhouse"])
        self.exec(self.ctl, ["mkdir", "-p", "/opt/pai-sandbox"])
        run(["podman", "cp", str(REPO / ".cache" / "wheelhouse"), f"{self.ctl.name}:/opt/pai-sandbox/wheelhouse"])

    def guest_ip(self, guest: Guest) -> str:
        out = run(["podman", "inspect", "--format", "{{json .NetworkSettings.Networks}}", guest.name]).stdout
        networks: dict[str, Any] = json.loads(out)
        return str(networks[self.name]["IPAddress"])

    # --- inventory ----------------------------------------------------------------------------------------------

    def write_kubeconfig(self) -> None:
        """Kubeconfig of the watchdog: the API stand-in on the control guest, plain HTTP, a dummy token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "sandbox",
            "clusters": [{"name": "sandbox", "cluster": {"server": "http://127.0.0.1:6443"}}],
            "users": [{"name": "watchdog", "user": {"token": "sandbox-token"}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "watchdog"}}],
        }
        (self.state_dir / "kubeconfig").write_text(json.dumps(config, indent=2) + "\n")

    def inventory(self) -> dict[str, Any]:
        ctl = self.ctl.name
        hosts: dict[str, dict[str, Any]] = {}
        for guest in self.guests:
            hosts[guest.name] = {"sandbox_ip": self.guest_ip(guest), "sandbox_role": guest.role}
        gpu_hosts = {
            g.name: {"sandbox_jobs": [list(j) for j in JOBS.get(g.index, JOBS[0])]}
            for g in self.guests
            if g.role == "gpu"
        }
        group_vars: dict[str, Any] = {
            # ssh as to any host; the guest's sshd is started per connection through `podman exec` (setup.sh).
            "ansible_connection": "ssh",
            "ansible_ssh_common_args": f"-F {SSH_CONFIG}",
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "sandbox_name": self.name,
            "sandbox_repo_dir": str(REPO),
            "sandbox_nvml_library": str(REPO / ".cache" / "nvml-sim" / "libnvidia-ml.so.1"),
            # Short intervals so that faults reach Alertmanager in seconds (see docs/demo.md for the arithmetic).
            "prometheus_scrape_interval": "5s",
            "prometheus_scrape_timeout": "4s",
            "prometheus_evaluation_interval": "5s",
            "prometheus_rules_alert_resend_delay": "5s",
            "prometheus_private_users": False,
            "prometheus_memory_max": "1G",
            "prometheus_storage_retention_time": "2d",
            # VictoriaMetrics and the webhook receiver run on the control guest; every monitoring guest reaches them
            # by its name. VictoriaMetrics deduplicates the replicas' samples (prepare.yml).
            "prometheus_remote_write": [{"url": f"http://{ctl}:8428/api/v1/write"}],
            "prometheus_external_labels": {"sandbox": self.name},
            "prometheus_alert_overrides": alert_overrides(),
            "alertmanager_private_users": False,
            "alertmanager_group_wait": "1s",
            **self.alertmanager_timing(),
            "alertmanager_repeat_interval": "1h",
            "alertmanager_resolve_timeout": "1m",
            "alertmanager_webhook_url": f"http://{ctl}:9095/alerts",
            "job_exporter_nvml_library_dir": NVML_DIR,
            "job_exporter_environment": {"PAI_NVML_SIM_SCENARIO": NVML_SCENARIO},
            "job_exporter_collector_options": {
                "gpu": {"interval": 5},
                "jobs": {"interval": 5},
                "node_health": {"interval": 5},
            },
            # The controller's wheelhouse (tests/hosts/setup.sh): wheels for the guests' Python 3.11 and 3.13. The
            # roles' default points into a checkout, which an installed collection is not.
            "job_exporter_wheelhouse_dir": str(REPO / ".cache" / "wheelhouse"),
            "watchdog_wheelhouse_dir": str(REPO / ".cache" / "wheelhouse"),
            "watchdog_kube_auth": "kubeconfig",
            "watchdog_kubeconfig_src": str(self.state_dir / "kubeconfig"),
            "watchdog_collector_options": {"kubernetes": {"interval": 5}},
        }
        return {
            "all": {
                "vars": group_vars,
                "hosts": hosts,
                "children": {
                    "monitoring": {"hosts": {g.name: {} for g in self.monitoring_guests}},
                    "control": {"hosts": {ctl: {}}},
                    "gpu_nodes": {"hosts": gpu_hosts},
                },
            },
        }

    def alertmanager_timing(self) -> dict[str, Any]:
        """Group interval and, with two Alertmanagers, their peer timeout: shortened like every interval here (the
        shipped defaults: group_interval 5m, --cluster.peer-timeout 15s).

        One Alertmanager: group_interval 5 s. Two: Prometheus replicas scrape at different moments and so resolve an
        alert up to a scrape plus an evaluation interval (10 s here) apart, the later one sending it as firing until
        then; a group interval longer than that lets the next tick find both resolved. The second member in the
        cluster's order waits the peer timeout before it notifies and then sends what its group held when it
        began: when its peer notified the resolution meanwhile, it sends that alert as firing once more (upstream
        prometheus/alertmanager#4008, open). Its chance grows with the peer timeout's share of the group interval,
        for a member whose groups started at another moment than its peer's (after a restart): 15 s of 5 m with
        the shipped defaults, 2 s of 20 s here. docs/scaling.md has the rule for sites."""
        if self.monitoring_hosts == 1:
            return {"alertmanager_group_interval": "5s"}
        return {"alertmanager_group_interval": "20s", "alertmanager_extra_flags": ["--cluster.peer-timeout=2s"]}

    def write_inventory(self) -> None:
        # JSON is YAML: ansible-playbook reads this file as a YAML inventory.
        self.inventory_path.write_text(json.dumps(self.inventory(), indent=2) + "\n")

    # --- ansible ------------------------------------------------------------------------------------------------

    @property
    def collections_path(self) -> Path:
        return self.state_dir / "collections"

    def install_collection(self) -> None:
        """Build the collection pai.monitoring from this checkout and install the tarball into the sandbox's own,
        otherwise empty, collections path, as a user installs it (``ansible-galaxy collection install``)."""
        build = self.state_dir / "collection-build"
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(self.collections_path, ignore_errors=True)
        build.mkdir(parents=True)
        env = {**ansible_environment(), "ANSIBLE_COLLECTIONS_PATH": str(self.collections_path)}
        galaxy = str(ANSIBLE_BIN / "ansible-galaxy")
        run([galaxy, "collection", "build", "--output-path", str(build), str(REPO)], env=env)
        (tarball,) = build.glob("pai-monitoring-*.tar.gz")
        run([galaxy, "collection", "install", "-p", str(self.collections_path), str(tarball)], env=env)
        self._collection_installed = True

    def playbook(
        self, path: Path, *extra: str, capture: bool = False, check: bool = True, limit: str | None = None
    ) -> str:
        """Run a playbook against the sandbox; its output is streamed (or captured and returned). The suite's own
        playbooks (playbooks/NAME.yml) run as a user runs them: ``pai.monitoring.NAME`` from the collection
        installed from its built tarball, with no role or collection of this checkout on Ansible's paths."""
        ansible = ANSIBLE_BIN / "ansible-playbook"
        env = ansible_environment()
        target = str(path)
        if path.parent == REPO / "playbooks":
            if not self._collection_installed:
                self.install_collection()
            target = f"pai.monitoring.{path.stem}"
            env = {**env, "ANSIBLE_COLLECTIONS_PATH": str(self.collections_path), "ANSIBLE_ROLES_PATH": ""}
        argv = [str(ansible), "-i", str(self.inventory_path), *(["--limit", limit] if limit else []), *extra, target]
        if capture:
            result = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT_S, check=False, cwd=REPO
            )
            if check and result.returncode != 0:
                sys.stderr.write(result.stdout[-20000:] + result.stderr[-5000:])
                msg = f"{path.name} failed (exit {result.returncode})"
                raise RuntimeError(msg)
            return result.stdout
        subprocess.run(argv, env=env, check=check, timeout=PLAYBOOK_TIMEOUT_S, cwd=REPO)
        return ""

    # --- guests at run time -------------------------------------------------------------------------------------

    def exec(
        self, guest: Guest, argv: Sequence[str], *, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", "exec", "-i", guest.name, *argv], check=check, input_text=input_text)

    def write_file(self, guest: Guest, path: str, content: str) -> None:
        """Replace a file in a guest atomically (temporary file, then rename), as the NVML simulator wants."""
        script = f'set -e; tmp=$(mktemp "{path}.XXXXXX"); cat > "$tmp"; chmod 0644 "$tmp"; mv -f "$tmp" "{path}"'
        self.exec(guest, ["sh", "-c", script], input_text=content)

    def main_pid(self, guest: Guest, unit: str) -> int:
        out = self.exec(guest, ["systemctl", "show", "--property=MainPID", "--value", unit]).stdout
        return int(out.strip() or 0)

    def gpu_scenario(
        self,
        guest: Guest,
        *,
        ecc_double: Mapping[int, int] | None = None,
        xids: Sequence[tuple[int, int]] = (),
        external_gpu: int | None = None,
        idle_job: bool = False,
    ) -> str:
        """The simulated NVML scenario of a GPU node: GPUs, the jobs' processes on them, and injected faults.

        Without faults the GPUs are healthy Hopper GPUs (GPM profiling, 18 NVLinks, PCIe counters, per-process
        utilisation, no errors): a GPU holds exactly the memory of the processes on it (the driver's reserve
        apart), a GPU on which a job runs kernels is busy in P0 and its processes share its utilisation, a GPU
        without a job is idle in P8 with no memory in use. ``external_gpu`` puts the stray process (a real process
        outside any job) on that GPU, with its memory; ``idle_job`` adds the processes of ``IDLE_JOB`` (started with
        :meth:`start_idle_job`), which hold memory on its GPUs and run kernels on none of ``IDLE_JOB_UNUSED_GPUS``.
        """
        reserved = 569 << 20  # what the driver of an 80 GB data-centre GPU keeps for itself
        # Per GPU: (PID, memory, runs kernels there).
        held: dict[int, list[tuple[int, int, bool]]] = {gpu: [] for gpu in range(GPUS_PER_NODE)}
        jobs = list(JOBS.get(guest.index, JOBS[0]))
        if idle_job:
            jobs.append(IDLE_JOB)
        spans: dict[int, int] = {}  # per GPU: the most GPUs any job on it holds (multi-GPU jobs talk over NVLink)
        for job in jobs:
            job_id, gpus = job[0], [int(g) for g in job[4].split(",")]
            pid = self.main_pid(guest, f"pai-sandbox-job-{job_id}.service")
            for gpu in gpus:
                runs_kernels = not (job is IDLE_JOB and gpu in IDLE_JOB_UNUSED_GPUS)
                held[gpu].append((pid, 4 * GIB, runs_kernels))
                spans[gpu] = max(spans.get(gpu, 0), len(gpus))
        if external_gpu is not None:
            held[external_gpu].append((self.main_pid(guest, "pai-sandbox-stray.service"), GIB, True))
        lines = [
            f"# Written by sandbox/sandbox.py for {guest.name}; a stand-in for {GPUS_PER_NODE} GPUs.",
            f"gpu_count = {GPUS_PER_NODE}",
            "driver_version = 550.54.15",
        ]
        for gpu in range(GPUS_PER_NODE):
            processes = held[gpu]
            active = [pid for pid, _, runs in processes if runs]
            busy = (35 + 15 * gpu + 7 * guest.index) % 100 if active else 0
            lines += [
                f"gpu.{gpu}.name = NVIDIA H100 80GB HBM3 (simulated)",
                f"gpu.{gpu}.memory.total = {80 * GIB}",
                f"gpu.{gpu}.memory.reserved = {reserved}",
                f"gpu.{gpu}.memory.used = {sum(memory for _, memory, _ in processes)}",
                f"gpu.{gpu}.utilization.gpu = {busy}",
                f"gpu.{gpu}.utilization.memory = {busy // 2}",
                f"gpu.{gpu}.temperature = {45 + 3 * gpu if active else 34}",
                f"gpu.{gpu}.power = {(120 + 40 * gpu if active else 70 if processes else 60) * 1000}",
                f"gpu.{gpu}.power_limit = 700000",
                f"gpu.{gpu}.clock.sm = {1980 if active else 345}",
                f"gpu.{gpu}.clock.mem = 2619",
                f"gpu.{gpu}.pstate = {0 if processes else 8}",
                f"gpu.{gpu}.clocks_event_reasons = {0 if active else 0x1}",
                f"gpu.{gpu}.ecc.uncorrected = {(ecc_double or {}).get(gpu, 0)}",
            ]
            lines += [f"gpu.{gpu}.process.{n} = {pid} {memory} compute" for n, (pid, memory, _) in enumerate(processes)]
            # Each process's share of the GPU's utilisation (NVML's per-process samples): the card's busy time split
            # between the processes that run kernels, 0 for one that only holds memory.
            lines += [
                f"gpu.{gpu}.process_util.{n} = {pid} {busy // len(active) if runs else 0} "
                f"{busy // 2 // len(active) if runs else 0}"
                for n, (pid, _, runs) in enumerate(processes)
            ]
            lines += gpm_lines(gpu, busy, nvlink=spans.get(gpu, 0) > 1)
        for sequence, (gpu, code) in enumerate(xids, start=1):
            lines.append(f"xid.{sequence} = {gpu} {code}")
        return "\n".join(lines) + "\n"

    def write_gpu_scenario(self, guest: Guest, **faults: Any) -> None:
        self.write_file(guest, NVML_SCENARIO, self.gpu_scenario(guest, **faults))

    def start_idle_job(self) -> Guest:
        """Start ``IDLE_JOB`` on the first GPU node as Slurm would (a transient unit with the environment that
        sandbox/templates/job.service.j2 gives the other jobs) and put its processes on its GPUs; returns the node."""
        guest = self.gpu(0)
        job_id, name, user, virtual_cluster, gpus, _ = IDLE_JOB
        environment = {
            "PAI_JOB_NAME": name,
            "PAI_USER_NAME": user,
            "PAI_CURRENT_TASK_ROLE_NAME": "worker",
            "PAI_TASK_INDEX": "0",
            "PAI_VIRTUAL_CLUSTER": virtual_cluster,
            "NVIDIA_VISIBLE_DEVICES": gpus,
        }
        argv = ["systemd-run", f"--unit=pai-sandbox-job-{job_id}.service", "--property=Delegate=yes"]
        argv += [f"--setenv={key}={value}" for key, value in environment.items()]
        argv += ["/opt/pai-sandbox/bin/slurm-job", str(job_id), "/usr/bin/python3", "/opt/pai-sandbox/bin/job.py"]
        self.exec(guest, argv)
        self.write_gpu_scenario(guest, idle_job=True)
        return guest

    def stop_idle_job(self) -> None:
        """End ``IDLE_JOB``: its processes, its Slurm cgroups (as slurmstepd removes them) and its GPU processes."""
        guest, job_id = self.gpu(0), IDLE_JOB[0]
        self.exec(guest, ["systemctl", "stop", f"pai-sandbox-job-{job_id}.service"], check=False)
        cgroups = [f"/sys/fs/cgroup/{c}/slurm/uid_0/job_{job_id}" for c in ("memory", "pids", "cpuacct", "blkio")]
        self.exec(guest, ["rmdir", "--ignore-fail-on-non-empty", *cgroups], check=False)
        self.write_gpu_scenario(guest)

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def get_json(
        self, service: str, path: str, params: Mapping[str, str] | None = None, guest: Guest | None = None
    ) -> Any:
        url = f"{self.url(service, guest)}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            # Prometheus answers a bad query with 400 and a JSON body that says why: return it to the caller.
            if error.headers.get_content_type() == "application/json":
                return json.load(error)
            raise

    def send_json(self, service: str, path: str, method: str, body: object) -> Any:
        request = urllib.request.Request(
            f"{self.url(service)}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return json.load(response)

    def query(self, expr: str, guest: Guest | None = None) -> list[dict[str, Any]]:
        """An instant query to the Prometheus of a monitoring guest (the control guest's by default)."""
        data = self.get_json("prometheus", "/api/v1/query", {"query": expr}, guest)
        if data.get("status") != "success":
            msg = f"query {expr!r} failed: {data}"
            raise RuntimeError(msg)
        return list(data["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        data = self.get_json("prometheus", "/api/v1/targets", {"state": "active"})
        return list(data["data"]["activeTargets"])

    def expected_targets(self) -> int:
        """node_exporter on every guest, a job-exporter per GPU node, the watchdog, Prometheus and Alertmanager on
        every monitoring guest."""
        return len(self.guests) + self.gpu_nodes + 1 + 2 * self.monitoring_hosts

    def wait_targets_up(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        expected = self.expected_targets()
        last = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, KeyError, ValueError):
                targets = self.targets()
                down = [f"{t['labels']['job']}/{t['labels']['instance']}" for t in targets if t["health"] != "up"]
                summary = f"{len(targets) - len(down)}/{len(targets)} targets up" + (
                    f"; waiting for {down}" if down else ""
                )
                if summary != last:
                    log(summary)
                    last = summary
                if len(targets) >= expected and not down:
                    return
            time.sleep(2)
        msg = f"not every target is up after {timeout:.0f}s: {last}"
        raise TimeoutError(msg)

    def webhook_alerts(self) -> list[dict[str, Any]]:
        """Every notification the webhook receiver in the control guest got: {received_at, payload}."""
        return list(self.get_json("webhook", "/alerts"))

    def print_welcome(self) -> None:
        print(f"""
Sandbox {self.name} is running: {", ".join(g.name for g in self.guests)} (podman network {self.name}).

  Prometheus       {self.url("prometheus")}/targets
  Alertmanager     {self.url("alertmanager")}/#/alerts
{self.second_monitoring_urls()}\
  VictoriaMetrics  {self.url("victoria_metrics")}/vmui   (receives everything through remote_write)
  Webhook log      {self.url("webhook")}/alerts          (what Alertmanager sent)

Queries to try in Prometheus ({self.url("prometheus")}/graph):
  up
  nvidiasmi_utilization_gpu
  task_gpu_percent
  sum by (job_name) (task_cpu_percent)
  count by (instance) (node_uname_info)
  pai_node_count
  ALERTS

Inject a fault (see docs/demo.md), e.g. stop an exporter:
  podman exec {self.gpu(0).name} systemctl stop pai-job-exporter
Status: sandbox/demo.sh status        Remove everything: make demo-down
""")

    def second_monitoring_urls(self) -> str:
        """The welcome's lines for the second monitoring guest, if any."""
        if self.monitoring_hosts < MAX_MONITORING_HOSTS:
            return ""
        mon = self.monitoring_guests[1]
        return (
            f"  Prometheus 2     {self.url('prometheus', mon)}/targets   ({mon.name}, replica of the first)\n"
            f"  Alertmanager 2   {self.url('alertmanager', mon)}/#/status   (one cluster with the first)\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--name", default="pai-demo", help="prefix of the guests and name of the network")
    parser.add_argument(
        "--port-base",
        type=int,
        default=19000,
        help="published ports: Prometheus base+90, Alertmanager base+93, VictoriaMetrics base+28, "
        "webhook log base+95, Kubernetes stand-in control base+44",
    )
    parser.add_argument(
        "--monitoring",
        type=int,
        choices=range(1, MAX_MONITORING_HOSTS + 1),
        default=1,
        help="hosts in the monitoring group: 1 (the control guest) or 2 (also <name>-mon2: two Prometheus replicas, "
        "an Alertmanager cluster; its Prometheus on base+91, Alertmanager on base+94)",
    )
    args = parser.parse_args(argv)
    sandbox = Sandbox(name=args.name, port_base=args.port_base, monitoring_hosts=args.monitoring)
    if args.command == "up":
        phases = sandbox.up()
        sandbox.print_welcome()
        print(f"Time per phase:\n{phases.table()}")
        return 0
    if args.command == "down":
        sandbox.down()
        return 0
    return sandbox.status()


if __name__ == "__main__":
    raise SystemExit(main())
