"""Files written so that an interrupted run never leaves one that looks complete, and their digests."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    The temporary file is created with mode 0o666, so the process's umask applies as it would to ``open``
    (``tempfile.mkstemp`` makes files private, and reading the umask means changing it, process-wide).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Strict JSON: a NaN or infinity is a ValueError here, never a bare ``NaN`` token other parsers refuse."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def staged_directory(target: str | Path, *, seed_from_target: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it becomes ``target``, on any error or
    interruption it is removed and ``target`` is left exactly as it was.

    ``seed_from_target`` names files of the current ``target`` to start from (caches a new run reuses); they
    are hard-linked, so the old folder stays intact. The swap is one atomic exchange where the kernel offers
    it (Linux renameat2), so no reader ever sees a folder that is half old and half new.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stages(target)
    stage = target.with_name(f".{target.name}.staging-{os.getpid()}-{secrets.token_hex(3)}")
    stage.mkdir()
    try:
        for name in seed_from_target:
            if (target / name).is_file():
                _link_or_copy(target / name, stage / name)
        yield stage
        _swap_in(stage, target)
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def _swap_in(stage: Path, target: Path) -> None:
    if not target.exists():
        os.rename(stage, target)
    elif not _exchange(stage, target):
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
        os.rename(target, old)
        os.rename(stage, target)
        shutil.rmtree(old)
    # After an exchange, ``stage`` holds the previous contents; the caller's cleanup removes them.


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 with RENAME_EXCHANGE); False where that is unavailable."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if done == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):  # filesystem or kernel without it
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def _remove_abandoned_stages(target: Path) -> None:
    """Staging folders of runs that were killed (their process is gone) are debris: remove them."""
    for kind in ("staging", "old"):
        for stage in target.parent.glob(f".{target.name}.{kind}-*"):
            pid = stage.name.split("-")[-2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stage, ignore_errors=True)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
