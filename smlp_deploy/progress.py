"""Step-by-step progress on stderr with elapsed times, and plain-text summary tables."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, Sequence


class Steps:
    """Prints ``[i/n] title ... done (1.2 s)`` lines; ``quiet`` silences everything (library use, tests)."""

    def __init__(self, total: int, quiet: bool = False, stream=None):
        self.total, self.index, self.quiet = total, 0, quiet
        self.stream = stream or sys.stderr

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"      {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.index += 1
        if not self.quiet:
            print(f"[{self.index}/{self.total}] {title} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        yield
        if not self.quiet:
            print(f"      done in {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a header rule, for terminal summaries."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
