"""Atomic files: complete or absent, on the disk before they are named, with the permissions the process's umask
gives (which stays as it was); one writer of a folder at a time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from smlp_deploy.errors import OutputError
from smlp_deploy.fileio import atomic_path, staged_directory, write_bytes_atomic

ROOT = Path(__file__).resolve().parent.parent


def test_files_follow_the_umask_and_leave_it_alone(tmp_path):
    previous = os.umask(0o027)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"data")
        assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
        assert os.umask(0o027) == 0o027  # unchanged by the write
    finally:
        os.umask(previous)


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    write_bytes_atomic(tmp_path / "b.bin", b"old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"] and (tmp_path / "b.bin").read_bytes() == b"old"


def test_a_renamed_file_and_its_folder_reach_the_disk_first(tmp_path, monkeypatch):
    """A rename is journaled before the data it names, so without a flush a power loss could leave a complete-looking
    empty file: each file is flushed before it is renamed into place, and its folder after. What is flushed is read
    from the real calls (each still made), by the path of the descriptor."""
    synced = []
    flush = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        flush(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    write_bytes_atomic(tmp_path / "a.bin", b"data")
    assert synced[0].startswith(f"{tmp_path}/.a.bin.") and synced[1:] == [str(tmp_path)]
    synced.clear()
    with staged_directory(tmp_path / "export") as stage:
        (stage / "sub").mkdir()
        (stage / "sub" / "b.bin").write_bytes(b"b")
        (stage / "c.bin").write_bytes(b"c")
    written = {f"{stage}/sub/b.bin", f"{stage}/sub", f"{stage}/c.bin", str(stage)}
    assert set(synced[:-1]) == written and synced[-1] == str(tmp_path)


HOLD = ("import sys, time; from smlp_deploy.fileio import FolderLock; FolderLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(300)")


def test_one_writer_at_a_time_and_who_it_is(tmp_path):
    """A folder another process writes is refused at once, naming that process; once it has died (killed, so it
    could not clean up), the folder is free, and a finished writer leaves no lock file behind."""
    target = tmp_path / "export"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(OutputError, match=rf"another process is writing {target} \(pid {child.pid} on host "
                                              rf"{socket.gethostname()} since \d{{4}}-.*\): wait until it has "
                                              "finished, or write to another folder"), staged_directory(target):
            pass
    finally:
        child.kill()
        child.wait()
    assert [p.name for p in tmp_path.iterdir()] == [".export.lock"]  # what the killed holder left
    with staged_directory(target) as stage:
        (stage / "a.bin").write_bytes(b"a")
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
