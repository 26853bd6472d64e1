"""The textfile write in a directory that others may write to (node_exporter's group): no planted file is followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pai_monitoring.runtime import textfile
from pai_monitoring.runtime.textfile import atomic_write

EXPOSITION = b"# TYPE pai_test gauge\npai_test 1\n"


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    directory = tmp_path / "textfile"
    directory.mkdir(mode=0o2775)
    return directory


def test_a_symlink_planted_at_the_old_predictable_name_is_not_followed(shared: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    target = shared / "pai_job_exporter.prom"
    # The old name was .<name>.<pid>.tmp, opened with O_CREAT|O_TRUNC: the write went through the link.
    (shared / f".{target.name}.{os.getpid()}.tmp").symlink_to(victim)
    atomic_write(target, EXPOSITION)
    assert victim.read_bytes() == b"precious\n"
    assert target.read_bytes() == EXPOSITION


def test_the_temporary_name_is_unpredictable(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names: list[str] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if Path(path).name.endswith(".tmp"):
            names.append(Path(path).name)
            assert flags & os.O_EXCL, "the temporary file must be created, never reused"
            assert flags & os.O_NOFOLLOW, "the temporary file must not be reached through a symlink"
        return real_open(path, flags, mode)

    monkeypatch.setattr(textfile.os, "open", spy)
    for _ in range(3):
        atomic_write(shared / "pai_job_exporter.prom", EXPOSITION)
    assert len(set(names)) == 3
    assert all(str(os.getpid()) not in name for name in names)


def test_an_existing_entry_at_the_chosen_name_is_left_alone(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who guessed (or saw) the next name and planted a link there: it is neither followed nor removed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    target = shared / "pai_job_exporter.prom"
    tokens = iter([b"guessed!", b"freshone"])
    monkeypatch.setattr(textfile.os, "urandom", lambda _n: next(tokens))
    planted = shared / f".{target.name}.{b'guessed!'.hex()}.tmp"
    planted.symlink_to(victim)
    atomic_write(target, EXPOSITION)
    assert victim.read_bytes() == b"precious\n"
    assert planted.is_symlink()
    assert target.read_bytes() == EXPOSITION
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~_umask()


def test_a_symlink_planted_at_the_target_is_replaced_not_followed(shared: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    target = shared / "pai_job_exporter.prom"
    target.symlink_to(victim)
    atomic_write(target, EXPOSITION)
    assert victim.read_bytes() == b"precious\n"
    assert not target.is_symlink()
    assert target.read_bytes() == EXPOSITION


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
