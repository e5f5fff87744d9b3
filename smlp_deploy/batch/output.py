"""Result files written by the driver as batches stream in, so that a killed run can resume where it stopped.

Two formats, chosen by the output's suffix:

* ``.jsonl``: one file, one JSON object per image, appended and fsynced batch by batch. A kill leaves at most a
  torn last line, which resuming cuts off.
* ``.parquet``: a folder of part files (``part-000000.parquet``, ...), the layout pyarrow, pandas, Spark and
  Ray read as one table. Rows are buffered and written as one part every ``PART_ROWS`` rows or
  ``PART_SECONDS`` seconds, each part atomically (a temporary file renamed), since a Parquet file cannot be
  appended to and one cut short has no footer. A kill loses the open part's rows, which resuming redoes.

Either output is locked (``flock``) while a run writes it, so two runs cannot interleave their rows.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Arg, InputError, OutputError
from ..fileio import atomic_path

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = {".jsonl": "JSON lines", ".parquet": "Parquet (a folder of part files)"}
PART_ROWS = 10_000
PART_SECONDS = 60.0  # bounds what a kill loses where images are slow (sMLPNet-T: ~10 img/s on 2 CPU cores)


class ResultSink(ABC):
    """Rows appended to ``path`` by one run; ``done`` holds the paths the output already had."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.existed = path.exists()
        if self.existed and not resume:
            raise InputError(f"output {str(path)!r} already exists: pass ", Arg("resume"), " to add only the images it "
                             "lacks, or choose a new path", parameter="output")
        self.rows_written = 0
        self._lock_fd = self._open_locked()
        try:
            self.done: set[str] = self._read_done()
        except BaseException:
            os.close(self._lock_fd)
            raise

    @abstractmethod
    def _open_locked(self) -> int: ...

    @abstractmethod
    def _read_done(self) -> set[str]: ...

    @abstractmethod
    def write(self, table: pa.Table) -> None:
        """Append a pyarrow Table of result rows."""

    def close(self, *, discard_if_empty: bool = False) -> None:
        """Write what is buffered and release the output; a run that failed before writing a row removes the
        output it created (``discard_if_empty``), so retrying needs no ``resume``."""
        os.close(self._lock_fd)
        if discard_if_empty and not self.existed and not self.rows_written:
            self._remove()

    @abstractmethod
    def _remove(self) -> None: ...

    def _lock(self, fd: int) -> int:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"output {str(self.path)!r} is being written by another run: wait for it to end, "
                              "or choose another output") from None
        return fd


def open_sink(path: str | Path, *, resume: bool) -> ResultSink:
    """The sink for ``path``'s format (by suffix), locked for this run, with the paths it already holds."""
    path = Path(path)
    kinds: dict[str, type[ResultSink]] = {".jsonl": JsonLinesSink, ".parquet": ParquetPartsSink}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"output {str(path)!r} must end in {' or '.join(FORMATS)} ("
                         f"{', '.join(FORMATS.values())})", parameter="output")
    return kind(path, resume)


class JsonLinesSink(ResultSink):
    def _open_locked(self) -> int:
        if self.path.is_dir():
            raise InputError(f"output {str(self.path)!r} is a folder: JSON lines go to a file", parameter="output")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._lock(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666))
        except OSError as exc:
            raise OutputError(f"cannot write output {str(self.path)!r}: {exc.strerror}") from exc

    def _read_done(self) -> set[str]:
        """Paths of the complete rows; a torn last line (the run was killed mid-write) is cut off."""
        done: set[str] = set()
        end = 0
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    break
                try:
                    row = json.loads(line)
                    done.add(row["path"])
                except (ValueError, TypeError, KeyError):
                    raise InputError(f"output {str(self.path)!r} line {number} is not a result row: it was not "
                                     "written by predict_dataset; choose a new output", parameter="output") from None
                end += len(line)
        os.truncate(self.path, end)
        return done

    def write(self, table: pa.Table) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in table.to_pylist())
        try:
            os.write(self._lock_fd, lines.encode())
            os.fsync(self._lock_fd)
        except OSError as exc:
            raise OutputError(f"cannot write output {str(self.path)!r}: {exc.strerror}") from exc
        self.rows_written += table.num_rows

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)


class ParquetPartsSink(ResultSink):
    def __init__(self, path: Path, resume: bool, *, part_rows: int = PART_ROWS, part_seconds: float = PART_SECONDS):
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self._buffer: list[pa.Table] = []
        self._buffered_rows, self._buffer_since = 0, 0.0
        super().__init__(path, resume)

    def _open_locked(self) -> int:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output {str(self.path)!r} is a file: Parquet output is a folder of part files",
                             parameter="output")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return self._lock(os.open(self.path, os.O_RDONLY | os.O_DIRECTORY))
        except OSError as exc:
            raise OutputError(f"cannot write output {str(self.path)!r}: {exc.strerror}") from exc

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def _read_done(self) -> set[str]:
        """Paths in the finished parts; the temporary file of a part a killed run was writing is removed."""
        import pyarrow.parquet as pq

        for leftover in self.path.glob(".part-*.parquet.*.part"):
            leftover.unlink()
        done: set[str] = set()
        for part in self._parts():
            try:
                done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
            except Exception as exc:  # any type: pyarrow raises ArrowInvalid, KeyError, OSError...
                raise InputError(f"output part {str(part)!r} is not a result part ({exc}): it was not written by "
                                 "predict_dataset; choose a new output", parameter="output") from None
        parts = self._parts()
        self._next_part = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        return done

    def write(self, table: pa.Table) -> None:
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        if self._buffered_rows >= self.part_rows or time.monotonic() - self._buffer_since >= self.part_seconds:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        target = self.path / f"part-{self._next_part:06d}.parquet"
        try:
            with atomic_path(target) as tmp:
                pq.write_table(pa.concat_tables(self._buffer), tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write output part {str(target)!r}: {exc.strerror or exc}") from exc
        self.rows_written += self._buffered_rows
        self._next_part += 1
        self._buffer, self._buffered_rows = [], 0

    def close(self, *, discard_if_empty: bool = False) -> None:
        try:
            self._flush()
        finally:
            super().close(discard_if_empty=discard_if_empty)

    def _remove(self) -> None:
        if not any(self.path.iterdir()):
            self.path.rmdir()
