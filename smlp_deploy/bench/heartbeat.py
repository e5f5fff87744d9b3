"""Progress of a long benchmark: a line as each phase starts and, between them, at most every ``every_s`` seconds,
the call that runs, so that no minute passes without a word (one round of sMLPNet-T's CPU matrix at batch 32 takes
over a minute on 2 cores)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HEARTBEAT_S = 20.0


class Heartbeat:
    """Lines prefixed with the time since the run started: ``[ 2:05] batch 32: round 3: onnxruntime fp16``."""

    def __init__(self, log: Callable[[str], None], every_s: float = HEARTBEAT_S):
        self.log, self.every_s = log, every_s
        self.start = self.last = time.monotonic()

    def say(self, line: str) -> None:
        """A line now: a phase starts, a result is in."""
        self.last = time.monotonic()
        minutes, seconds = divmod(int(self.last - self.start), 60)
        self.log(f"[{minutes:2d}:{seconds:02d}] {line}")

    def beat(self, line: str) -> None:
        """A line if none was written for ``every_s`` seconds."""
        if time.monotonic() - self.last >= self.every_s:
            self.say(line)

    @contextmanager
    def ticking(self, line: str) -> Iterator[None]:
        """``line`` now and every ``every_s`` seconds while a step that reports nothing runs (the temporary export),
        from a thread of its own; never around timed calls."""
        self.say(line)
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.every_s):
                self.say(line)

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
