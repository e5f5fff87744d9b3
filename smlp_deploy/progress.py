"""Progress on stderr: numbered steps with elapsed time, progress bars, and plain-text summary tables.

On a terminal a running step shows its elapsed time, updated every second, and bars redraw in place. Anywhere
else (a log file, CI) every line is written once and ends with a newline: no carriage returns, no bars.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar, overload

from tqdm import tqdm

T = TypeVar("T")
_local = threading.local()  # the ticker of the step running in this thread, which bars hold
TICK_S = 1.0  # how often a running step's elapsed time is redrawn on a terminal
INDENT = "      "


def is_terminal(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


class Steps:
    """Prints ``[i/n] title ...`` and, when the step ends, ``done in 1.2 s`` on a line of its own.

    ``quiet`` silences everything (library use, tests). A :func:`progress_bar` opened inside a step holds the
    elapsed-time display while it draws.
    """

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.index, self.quiet = total, 0, quiet
        self.stream = sys.stderr
        self.live = not quiet and is_terminal(self.stream)
        self._ticker: _Ticker | None = None

    def _print(self, text: str) -> None:
        if self._ticker:
            self._ticker.clear()
        print(text, file=self.stream, flush=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            self._print(f"{INDENT}{message}")

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.index += 1
        if not self.quiet:
            print(f"[{self.index}/{self.total}] {title} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        self._ticker = _local.ticker = _Ticker(self.stream, start) if self.live else None
        try:
            yield
        finally:
            if self._ticker:
                self._ticker.stop()
            self._ticker = _local.ticker = None
        if not self.quiet:
            print(f"{INDENT}done in {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)


@overload
def progress_bar(iterable: Iterable[T], *, quiet: bool = False, **options: Any) -> tqdm[T]: ...


@overload
def progress_bar(iterable: None = None, *, quiet: bool = False, **options: Any) -> tqdm[NoReturn]: ...


def progress_bar(iterable: Iterable[T] | None = None, *, quiet: bool = False, **options: Any) -> tqdm[T]:
    """``tqdm(iterable, **options)`` on stderr that draws only on a terminal (a log would fill with carriage
    returns) and leaves no line behind."""
    return _Bar(iterable, ticker=getattr(_local, "ticker", None), file=sys.stderr, leave=False,
                disable=quiet or not is_terminal(sys.stderr), **options)


if TYPE_CHECKING:
    _TqdmBar = tqdm[Any]
else:
    _TqdmBar = tqdm  # tqdm is generic in its stubs only: subscripting it at run time fails


class _Bar(_TqdmBar):
    """A tqdm bar that holds the step's elapsed-time display while it draws on the same line."""

    def __init__(self, *args: Any, ticker: _Ticker | None = None, **options: Any):
        self._ticker = ticker
        if ticker:
            ticker.hold()
        super().__init__(*args, **options)

    def close(self) -> None:
        super().close()
        if self._ticker:
            self._ticker.release()
            self._ticker = None


class _Ticker:
    """Redraws ``elapsed N s`` below a running step, on a terminal, until stopped; bars hold it while they draw."""

    def __init__(self, stream: TextIO, start: float):
        self.stream, self.start = stream, start
        self._lock = threading.Lock()
        self._shown = False
        self._holds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smlp-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if not self._holds:
                    self.stream.write(f"\r{INDENT}elapsed {time.perf_counter() - self.start:.0f} s\033[K")
                    self.stream.flush()
                    self._shown = True

    def hold(self) -> None:
        self.clear()
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        with self._lock:
            self._holds -= 1

    def clear(self) -> None:
        """Erase the elapsed-time line, so the next line starts at column 0."""
        with self._lock:
            if self._shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._shown = False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.clear()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a header rule, for terminal summaries."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
