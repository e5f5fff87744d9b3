"""Files written so that an interrupted run never leaves one that looks complete, their digests, and the lock that
lets one process at a time write a folder.

Everything renamed into place is flushed to the disk first (the file, then the folder that names it): a rename is
journaled before the data it points at, so a power loss could otherwise leave a complete-looking, empty file.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from .errors import OutputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed to the disk and renamed onto ``path``, on
    error removed.

    The temporary file is created with mode 0o666, so the process's umask applies as it would to ``open``
    (``tempfile.mkstemp`` makes files private, and reading the umask means changing it, process-wide).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk (Linux syncs through a read-only descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class FolderLock:
    """The right to write ``target``: an exclusive ``flock`` on ``.<name>.lock`` beside it (the folder itself is
    swapped, so it cannot hold the lock). The kernel releases it when its holder exits, however it exits, and
    another container on the same host, or another host on NFS (which carries ``flock`` as a lock of the whole
    file), sees it too: unlike a process id, it cannot be mistaken for a dead one. A second writer is refused at
    once, with who holds it, rather than made to wait: it would only replace the first one's result when it ran.
    """

    def __init__(self, target: str | Path, *, parameter: str | None = None):
        self.target = Path(target)
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self.parameter = parameter
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputError` naming its holder."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 512).decode(errors="replace").strip()
                os.close(fd)
                raise OutputError(f"another process is writing {self.target}{f' ({holder})' if holder else ''}: "
                                  "wait until it has finished, or write to another folder",
                                  parameter=self.parameter) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us unlinks the file while it still holds it: a file we opened before that is no
            # longer the lock, so take the one at the path now.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        self._fd = fd
        try:  # who holds it, for the message of the next one
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        except BaseException:
            self.release()
            raise

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file, then let go of it (in that order: see :meth:`acquire`)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder turned read-only: the file stays, unlocked, for the next writer to take
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextmanager
def staged_directory(target: str | Path, *, seed_from_target: tuple[str, ...] = (),
                     lock: FolderLock | None = None) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it becomes ``target``, on any error or
    interruption it is removed and ``target`` is left exactly as it was.

    The whole run holds ``target``'s :class:`FolderLock` (``lock``: the caller's, taken here unless the caller
    holds it already), so it is the one writer of ``target``. A staging folder found beside ``target`` is then
    debris of a writer that died (a writer makes its stage only while it holds the lock), and is removed.
    ``seed_from_target`` names files of the current ``target`` to start from (caches a new run reuses); they are
    hard-linked, so the old folder stays intact. Before the swap every file of the stage is flushed to the disk;
    the swap is one atomic exchange where the kernel offers it (Linux renameat2), so no reader ever sees a folder
    that is half old and half new.
    """
    target = Path(target)
    lock = lock or FolderLock(target)
    if lock.target != target:
        raise ValueError(f"staged_directory({target}) was given the lock of {lock.target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with nullcontext() if lock.held else lock:
        _remove_abandoned_stages(target)
        stage = target.with_name(f".{target.name}.staging-{os.getpid()}-{secrets.token_hex(3)}")
        stage.mkdir()
        try:
            for name in seed_from_target:
                if (target / name).is_file():
                    _link_or_copy(target / name, stage / name)
            yield stage
            _sync_tree(stage)
            _swap_in(stage, target)
            fsync(target.parent)
        finally:
            if stage.exists():
                shutil.rmtree(stage)


def _sync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, then each folder's entries, to the disk."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync(Path(root) / name)
        fsync(Path(root))


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
    """Called with ``target``'s lock held: every staging folder of it belongs to a writer that no longer holds the
    lock, so died before it could clean up (whatever its process id now names, here or in another container)."""
    for kind in ("staging", "old"):
        for stage in target.parent.glob(f".{target.name}.{kind}-*"):
            shutil.rmtree(stage, ignore_errors=True)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
