"""The README's "Deploy on a real cluster" recipe, run as a new user runs it, against guests that reach no network.

What it replaces: trying that section by hand. The rest of this tier deploys with the test machinery's own Ansible
(``.cache/molecule-venv``, the full ``ansible`` package) and wheelhouse (``tests/hosts/setup.sh``), so it cannot
notice a recipe step that is missing, a collection the recipe does not install, or a wheelhouse built for the
controller's Python instead of the hosts'. Here the README's commands alone have to get a clean controller to a
running site, and the hosts have to install everything without a network.

Controller: a copy of the files a clone of this repository holds (tracked files, and new ones git does not ignore so
that uncommitted edits are tested; nothing of ``.cache``, ``.venv`` or ``dist``), ``HOME`` a new temporary directory
(``~/pai-ansible`` is a new virtualenv, ``~/.ansible`` an empty collections path) and no ``ANSIBLE_*`` or virtualenv
variables. ``PIP_CACHE_DIR`` points at this machine's pip cache, which spares downloads and changes no result. The
bash block is read from README.md as written (tests/support/readme_recipe.py) and cut before each
``ansible-playbook`` line; the exported environment carries from one step to the next, as in one shell. Between the
set-up and ``site`` the test does what the recipe tells the user to: it fills in the copied inventory (``hosts.yml``:
the guests, the ssh settings that reach them, the simulated GPUs' scenario file in the GPU node's
``job_exporter_environment``; ``files/watchdog-kubeconfig``); ``group_vars`` stay as shipped.

Hosts: two systemd guests of the sandbox (sandbox/sandbox.py) on a podman network made with ``--internal``: no route
out, no DNS (checked first: a connection to the package index fails in each). ``mon`` (Debian 12, Python 3.11) is the
monitoring and control host and a CPU node; ``gpu`` (Debian 13, Python 3.13) is a GPU node whose "driver" is the
simulated NVML library (sim/nvml/, a stand-in for GPUs), put where a driver puts libnvidia-ml.so.1. What a real site
gives its hosts and these lack is given by hand, before the recipe runs: each other's names (in /etc/hosts, as DNS
would) and fresh apt lists (the guest images hold the lists and the Debian packages the roles install in their apt
cache, and are marked as refreshed within the hour, so the roles' apt tasks install from the cache as on a host with
a reachable mirror). The watchdog's kubeconfig names an API server nobody runs: its collector fails, its endpoint
answers.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from sandbox.sandbox import REPO, SSH_CONFIG, Guest, Sandbox, log, run
from tests.support.readme_recipe import SETUP, Step, readme_steps

pytestmark = pytest.mark.e2e

STEP_TIMEOUT_S = 1200
WAIT_S = 180.0
NVML_LIBRARY = REPO / ".cache" / "nvml-sim" / "libnvidia-ml.so.1"
NVML_SCENARIO = "/etc/pai-sandbox/nvml.conf"
SIMULATED_GPUS = 2
PACKAGE_INDEX = "pypi.org"
# What Ansible's apt module reads as the time of the last successful `apt-get update` (its cache_valid_time).
APT_STAMP = "/var/lib/apt/periodic/update-success-stamp"
# The virtualenvs the roles install pai-monitoring into (job_exporter_install_dir, watchdog_install_dir).
VENVS: dict[str, tuple[str, ...]] = {
    "mon": ("/opt/pai-monitoring/job-exporter/venv", "/opt/pai-monitoring/watchdog/venv"),
    "gpu": ("/opt/pai-monitoring/job-exporter/venv",),
}
UNITS = {
    "mon": (
        "prometheus.service",
        "prometheus-alertmanager.service",
        "prometheus-node-exporter.service",
        "pai-job-exporter.service",
        "pai-watchdog.service",
    ),
    "gpu": ("prometheus-node-exporter.service", "pai-job-exporter.service"),
}
# node_exporter and the job exporter on both hosts, the watchdog, Prometheus and Alertmanager.
TARGETS = 7
PORTS = (9090, 9093, 9100, 9101, 9102)
# Left by purge: data and installation of the suite.
PURGED_PATHS = ("/var/lib/prometheus", "/opt/pai-monitoring", "/etc/pai-monitoring", "/etc/prometheus")
# What `python3 -m venv` puts in every virtualenv, from Debian's python3-venv: not the wheelhouse's.
VENV_SEEDS = frozenset({"pip", "setuptools"})
QUERY = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
DIST_TAGS = """\
import importlib.metadata as m, json
print(json.dumps([[d.metadata["Name"], d.version, sorted(line.split(":", 1)[1].strip()
    for line in (d.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:"))] for d in m.distributions()]))
"""


@dataclass
class Recipe:
    """The guests, the controller's copy of the repository and HOME, and the environment the recipe left."""

    box: Sandbox
    mon: Guest
    gpu: Guest
    clone: Path
    home: Path
    steps: dict[str, Step]
    env: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def guest(self, short: str) -> Guest:
        return self.mon if short == "mon" else self.gpu

    def sh(self, guest: Guest, script: str) -> subprocess.CompletedProcess[str]:
        return self.box.exec(guest, ["sh", "-c", script], check=False)

    def run_step(self, name: str) -> None:
        """One step of the README's block with bash (-e: a failing line ends it), in the copy, from the environment
        the previous step left; its output goes to a log next to the copy."""
        step = self.steps[name]
        env_out = self.home.parent / f"env-after-{name}"
        output = self.home.parent / f"recipe-{name}.log"
        script = f"{step.script}\nenv -0 > {shlex.quote(str(env_out))}\n"
        log(f"README recipe, step {name}:\n{step.script.rstrip()}")
        start = time.monotonic()
        with output.open("w") as out:
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script],
                cwd=self.clone,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT_S,
                check=False,
            )
        self.seconds[name] = time.monotonic() - start
        log(f"step {name}: {self.seconds[name]:.0f}s, exit {result.returncode}")
        text = output.read_text(errors="replace")
        assert result.returncode == 0, f"the README's step {name!r} failed (full output: {output}):\n{text[-6000:]}"
        # What a user reads first: Ansible's warnings about the inventory they were told to write, and the roles'
        # own (a path a task could not read).
        warnings = [
            line
            for line in text.splitlines()
            if "WARNING]" in line and ("inventory" in line.lower() or "access issue" in line)
        ]
        assert not warnings, f"step {name!r} warns ({output}):\n" + "\n".join(warnings[:5])
        self.env = dict(item.split("=", 1) for item in env_out.read_text().split("\0") if "=" in item)
        self.done.append(name)


def controller_environment(home: Path) -> dict[str, str]:
    """A new user's shell: the system's PATH, a HOME of its own, this machine's pip settings (its index and CA
    configuration), and the pip cache of this machine's user so that downloads are not repeated."""
    pip = {key: value for key, value in os.environ.items() if key.startswith("PIP_")}
    cache = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    return {
        **pip,
        "PIP_CACHE_DIR": cache,
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }


def copy_of_the_repository(dest: Path) -> None:
    """The files a clone holds (tracked and new, not ignored), as they are in the working tree."""
    listed = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def prepare_guests(box: Sandbox, mon: Guest, gpu: Guest) -> None:
    """Boot, names, fresh apt lists; on the GPU node the simulated driver library and its scenario."""
    for guest in (mon, gpu):
        # Until the guest's systemd has its bus up, systemctl answers nothing (or "offline"): ask again.
        wait_for(
            f"{guest.name} booted",
            lambda g=guest: (
                box.exec(g, ["systemctl", "is-system-running", "--wait"], check=False).stdout.strip()
                in ("running", "degraded")
            ),
        )
    hosts = "".join(f"{box.guest_ip(g)}\t{g.name}\n" for g in (mon, gpu))
    for guest in (mon, gpu):
        # podman bind-mounts /etc/hosts: append, never replace it.
        box.exec(guest, ["sh", "-c", "cat >> /etc/hosts"], input_text=hosts)
        box.exec(guest, ["sh", "-c", f"mkdir -p {APT_STAMP.rsplit('/', 1)[0]} && touch {APT_STAMP}"])
    libdir = box.exec(gpu, ["python3", "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"]).stdout
    run(["podman", "cp", str(NVML_LIBRARY), f"{gpu.name}:{libdir.strip()}/libnvidia-ml.so.1"])
    box.exec(gpu, ["ldconfig"])
    box.exec(gpu, ["mkdir", "-p", str(Path(NVML_SCENARIO).parent)])
    box.write_file(gpu, NVML_SCENARIO, f"gpu_count = {SIMULATED_GPUS}\n")


def fill_in_inventory(recipe: Recipe) -> None:
    """What the recipe's comment asks of the user after ``cp -r inventory.example inventory``: the hosts by group,
    how to reach them, and the watchdog's kubeconfig (the file group_vars/control.yml names)."""
    inventory = recipe.clone / "inventory"
    assert (inventory / "group_vars" / "all.yml").read_text() == (
        recipe.clone / "inventory.example" / "group_vars" / "all.yml"
    ).read_text(), "the recipe's set-up does not copy inventory.example to inventory"
    mon, gpu = recipe.mon.name, recipe.gpu.name
    hosts = {
        "all": {
            "vars": {"ansible_user": "root", "ansible_ssh_common_args": f"-F {SSH_CONFIG}"},
            "children": {
                "gpu_nodes": {"hosts": {gpu: {"job_exporter_environment": {"PAI_NVML_SIM_SCENARIO": NVML_SCENARIO}}}},
                "cpu_nodes": {"hosts": {mon: {}}},
                "control": {"hosts": {mon: {}}},
                "monitoring": {"hosts": {mon: {}}},
            },
        }
    }
    # JSON is YAML.
    (inventory / "hosts.yml").write_text(json.dumps(hosts, indent=2) + "\n")
    # The sandbox's kubeconfig: an API server on the control host, which nobody runs here.
    recipe.box.write_kubeconfig()
    shutil.copy(recipe.box.state_dir / "kubeconfig", inventory / "files" / "watchdog-kubeconfig")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recipe]:
    if os.geteuid() != 0:
        pytest.fail("the sandbox needs root (podman guests with systemd)")
    for needed in (SSH_CONFIG, NVML_LIBRARY):
        assert needed.is_file(), f"{needed} is missing: run tests/hosts/setup.sh (make hosts)"
    name = f"{os.environ.get('PAI_E2E_NAME', 'pai-e2e')}-recipe"
    box = Sandbox(name=name, port_base=int(os.environ.get("PAI_E2E_PORT_BASE", "29100")), gpu_nodes=0, internal=True)
    mon, gpu = Guest(f"{name}-mon", "ctl", 0, "bookworm"), Guest(f"{name}-gpu", "gpu", 0, "trixie")
    base = tmp_path_factory.mktemp("recipe")
    clone, home = base / "pai-monitoring", base / "home"
    home.mkdir()
    try:
        box.down()
        box.state_dir.mkdir(parents=True, exist_ok=True)
        box.ensure_network()
        for guest in (mon, gpu):
            box.ensure_guest(guest)
        prepare_guests(box, mon, gpu)
        copy_of_the_repository(clone)
        steps = {step.name: step for step in readme_steps(clone)}
        yield Recipe(box, mon, gpu, clone, home, steps, controller_environment(home))
    finally:
        if os.environ.get("PAI_E2E_KEEP") != "1":
            box.down()


def prometheus(recipe: Recipe, path: str) -> Any:
    """Prometheus' API, asked on the monitoring host itself (this machine's HTTP to a guest's address may pass
    through a proxy); a refused connection is an OSError, as it would be here."""
    result = recipe.box.exec(recipe.mon, ["python3", "-c", QUERY, f"http://127.0.0.1:9090{path}"], check=False)
    if result.returncode != 0:
        raise ConnectionError(result.stderr.strip().splitlines()[-1:])
    return json.loads(result.stdout)["data"]


def unit_states(recipe: Recipe, query: str) -> dict[tuple[Guest, str], str]:
    """What ``systemctl QUERY UNIT`` says of each unit of the suite, on the guest that runs it."""
    return {
        (recipe.guest(short), unit): recipe.sh(recipe.guest(short), f"systemctl {query} {unit}").stdout.strip()
        for short, units in UNITS.items()
        for unit in units
    }


def wait_for(what: str, check: Any) -> Any:
    """Poll ``check`` until it returns something true (errors count as not yet); fail after WAIT_S with the last."""
    deadline, last = time.monotonic() + WAIT_S, None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as error:
            last = error
        else:
            if last:
                return last
        time.sleep(2)
    pytest.fail(f"{what}: not after {WAIT_S:.0f}s; last: {last!r}")


def test_the_guests_reach_no_package_index(recipe: Recipe) -> None:
    """The proof that they are offline: no name resolves, and the index's address (resolved here) is unreachable."""
    address = socket.getaddrinfo(PACKAGE_INDEX, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    probe = (
        "import socket\n"
        f"for host in ({PACKAGE_INDEX!r}, {address!r}):\n"
        "    try: socket.create_connection((host, 443), timeout=5).close(); print('reached', host)\n"
        "    except OSError as error: print('failed', host, error)\n"
    )
    for guest in (recipe.mon, recipe.gpu):
        out = recipe.box.exec(guest, ["python3", "-c", probe]).stdout
        assert "reached" not in out, f"{guest.name} reaches the package index:\n{out}"
        assert out.count("failed") == 2, out


def test_site_from_the_readme_runs_the_suite_from_the_wheelhouse(recipe: Recipe) -> None:
    assert [*recipe.steps] == [SETUP, "site", "stop", "delete"], f"README recipe steps: {[*recipe.steps]}"
    recipe.run_step(SETUP)
    fill_in_inventory(recipe)
    recipe.run_step("site")

    for (guest, unit), state in unit_states(recipe, "is-active").items():
        journal = recipe.sh(guest, f"journalctl --no-pager -n 20 -u {unit}").stdout
        assert state == "active", f"{unit} on {guest.name} is {state}:\n{journal}"

    def all_up() -> list[dict[str, Any]] | None:
        targets = prometheus(recipe, "/api/v1/targets?state=active")["activeTargets"]
        up = len(targets) == TARGETS and all(t["health"] == "up" for t in targets)
        return targets if up else None

    targets = wait_for(f"{TARGETS} targets up in Prometheus on {recipe.mon.name}", all_up)
    instances = {t["labels"]["instance"] for t in targets}
    assert any(i.startswith(f"{recipe.gpu.name}:") for i in instances), instances

    def gpus() -> list[Any]:
        return list(prometheus(recipe, "/api/v1/query?query=nvidiasmi_utilization_gpu")["result"])

    reported = wait_for("the simulated GPUs in Prometheus", gpus)
    assert len(reported) == SIMULATED_GPUS, reported
    assert {r["metric"]["instance"].split(":")[0] for r in reported} == {recipe.gpu.name}

    # Every package in the exporters' virtualenvs is a wheel of the wheelhouse, with the wheel's own tags: the one
    # built for the guest's Python where the wheelhouse has one per Python.
    wheelhouse = recipe.clone / "inventory" / "files" / "wheelhouse"
    wheels: dict[tuple[str, str], set[frozenset[str]]] = {}
    for path in wheelhouse.glob("*.whl"):
        dist, version, _, wheel_tags = parse_wheel_filename(path.name)
        wheels.setdefault((dist, str(version)), set()).add(frozenset(str(t) for t in wheel_tags))
    for short, venvs in VENVS.items():
        guest = recipe.guest(short)
        python = recipe.sh(guest, "python3 -c 'import sys; print(*sys.version_info[:2], sep=\"\")'").stdout.strip()
        for venv in venvs:
            listed = recipe.box.exec(guest, [f"{venv}/bin/python", "-c", DIST_TAGS]).stdout
            installed = [
                (canonicalize_name(n), v, frozenset(t)) for n, v, t in json.loads(listed) if n not in VENV_SEEDS
            ]
            assert any(name == "pai-monitoring" for name, _, _ in installed), listed
            for dist, version, tags in installed:
                assert tags in wheels.get((dist, version), set()), (
                    f"{dist} {version} ({sorted(tags)}) in {venv} on {guest.name} is no wheel of the wheelhouse"
                )
            own_python = [dist for dist, _, tags in installed if any(t.startswith(f"cp{python}-") for t in tags)]
            assert own_python, f"no binary wheel for CPython {python} in {venv} on {guest.name}: {installed}"


def test_stop_from_the_readme_stops_every_unit(recipe: Recipe) -> None:
    assert "site" in recipe.done, "the site step did not run"
    recipe.run_step("stop")
    running = [
        f"{unit} on {guest.name}"
        for (guest, unit), state in unit_states(recipe, "is-active").items()
        if state == "active"
    ]
    assert not running, f"still running after stop: {running}"
    assert recipe.sh(recipe.mon, "test -d /var/lib/prometheus/metrics2").returncode == 0, "stop removed the TSDB"


def test_delete_from_the_readme_removes_units_and_data(recipe: Recipe) -> None:
    assert "stop" in recipe.done, "the stop step did not run"
    recipe.run_step("delete")
    known = {
        f"{unit} on {guest.name}": state
        for (guest, unit), state in unit_states(recipe, "show --property=LoadState --value").items()
        if state != "not-found"
    }
    assert not known, f"units still known to systemd after delete: {known}"
    for guest in (recipe.mon, recipe.gpu):
        for path in PURGED_PATHS:
            assert recipe.sh(guest, f"test -e {path}").returncode != 0, f"{path} is left on {guest.name}"
        listening = recipe.sh(guest, "ss -Htln").stdout
        for port in PORTS:
            assert f":{port} " not in listening, f"port {port} still listens on {guest.name}:\n{listening}"
    log("README recipe, wall time per step: " + ", ".join(f"{n} {s:.0f}s" for n, s in recipe.seconds.items()))
