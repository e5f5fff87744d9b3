"""Atomic files: complete or absent, with the permissions the process's umask gives, which stays as it was."""

from __future__ import annotations

import os

import pytest

from smlp_deploy.fileio import atomic_path, write_bytes_atomic


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
