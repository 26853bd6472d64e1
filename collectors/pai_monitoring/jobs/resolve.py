"""Putting a name to a unit: job identity, Kubernetes metadata and container name, from the best source at hand.

Order: the docker daemon's labels and environment (when it answered this cycle), the OCI bundle in containerd's
or podman's local state, then ``/proc/<pid>/environ`` of the unit's first processes. The result is kept for the
unit's lifetime; a unit that showed no job keys is looked at again only when its first process changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pai_monitoring.jobs.cgroups import Unit
from pai_monitoring.jobs.docker import inspect_metadata
from pai_monitoring.jobs.identity import (
    WANTED_KEYS,
    JobIdentity,
    KubeMeta,
    has_job_keys,
    job_identity,
    kube_meta,
    merged,
    user_name,
)
from pai_monitoring.jobs.procfs import process_comm, process_uid, read_environ
from pai_monitoring.jobs.runtimeview import RuntimeSources, RuntimeView


@dataclass
class Resolved:
    """What is known about one unit."""

    values: dict[str, str] = field(default_factory=dict)
    """Identity and GPU keys (merged labels and environment)."""
    kube: KubeMeta | None = None
    name: str | None = None
    checked_pid: int | None = None
    runtimes_done: bool = False
    """Whether the runtimes were asked; not yet when this cycle's Docker API time budget ran out first."""

    @property
    def final(self) -> bool:
        return has_job_keys(self.values)


def _from_runtimes(unit: Unit, view: RuntimeView, sources: RuntimeSources, resolved: Resolved) -> bool:
    """Fill ``resolved`` from the runtimes; ``False`` when the Docker API should have been asked but was not."""
    done = True
    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    metadata: dict[str, str] = {}
    runtime = view.runtime_of(unit)
    # any container the Docker API knows (docker itself, or podman's Docker-compatible service) is inspected
    if sources.docker is not None and view.docker_states is not None and unit.ident in view.docker_states:
        inspected = sources.docker.inspect(unit.ident) if sources.may_inspect() else None
        done = inspected is not None
        if inspected is not None:
            labels, env, resolved.name = inspect_metadata(inspected)
            metadata.update(labels)
    namespace = (view.containerd_tasks or {}).get(unit.ident)
    if namespace is not None and sources.containerd is not None and not env:
        bundle = sources.containerd.bundle(namespace, unit.ident)
        if bundle is not None:
            env, metadata = bundle.env, {**bundle.annotations, **metadata}
    if runtime == "podman" and sources.podman is not None:
        resolved.name = (view.podman_names or {}).get(unit.ident, resolved.name)
        if not env:
            bundle = sources.podman.bundle(unit.ident)
            env = bundle.env if bundle is not None else {}
    resolved.values = merged(labels, env)
    resolved.kube = kube_meta(metadata)
    if resolved.kube is not None and resolved.kube.container != "unknown":
        resolved.name = resolved.kube.container
    return done


def resolve(
    unit: Unit, pids: list[int], view: RuntimeView, sources: RuntimeSources, proc_root: str, previous: Resolved | None
) -> Resolved:
    """The unit's metadata, reusing ``previous`` when nothing new can be learnt."""
    first = pids[0] if pids else None
    runtimes_pending = unit.kind == "container" and (previous is None or not previous.runtimes_done)
    if previous is not None and not runtimes_pending and (previous.final or previous.checked_pid == first):
        return previous
    resolved = previous or Resolved()
    if runtimes_pending:
        from_proc = resolved.values
        resolved.runtimes_done = _from_runtimes(unit, view, sources, resolved)
        if from_proc:
            resolved.values = {**from_proc, **resolved.values}
    if not resolved.final:
        for pid in pids:
            env = read_environ(proc_root, pid, WANTED_KEYS)
            if env:
                resolved.values = {**env, **resolved.values} if resolved.values else env
                if resolved.final:
                    break
    sandbox_probe = unit.pod_uid is not None and resolved.kube is None and first is not None
    if sandbox_probe and first is not None and process_comm(proc_root, first) == "pause":
        resolved.kube = KubeMeta(sandbox=True)
    if unit.kind == "service":
        resolved.name = unit.ident
    resolved.checked_pid = first
    return resolved


def slurm_identity(unit: Unit, resolved: Resolved, pids: list[int], proc_root: str) -> JobIdentity:
    """A Slurm job's identity: ``PAI_*`` keys if its environment has them, else the job id and the owner's name."""
    uid = unit.slurm_uid
    if uid is None and pids:
        uid = process_uid(proc_root, pids[0])
    defaults = {"job_name": unit.ident}
    if uid is not None:
        defaults["username"] = user_name(uid)
    return job_identity(resolved.values, defaults)
