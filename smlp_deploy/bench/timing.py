"""Timing one callable: warm-up excluded, a fixed count or a time budget, the device synchronized per call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

MIN_ITERS = 5


@dataclass(frozen=True)
class Latency:
    """Per-call wall times in milliseconds; medians are quoted, the spread says how much to trust them."""

    samples_ms: tuple[float, ...]

    def summary(self) -> dict[str, float]:
        s = np.asarray(self.samples_ms)
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(s.mean()),
                "std": float(s.std()), "min": float(s.min()), "n": len(s)}


def measure(
    call: Callable[[], object],
    *,
    warmup: int = 3,
    iters: int | None = None,
    duration_s: float = 3.0,
    sync: Callable[[], None] = lambda: None,
) -> Latency:
    """Time ``call`` ``iters`` times, or for about ``duration_s`` (at least MIN_ITERS calls), after ``warmup``.

    ``sync`` waits for the device (``torch.cuda.synchronize``), so asynchronous launches are timed to completion.
    """
    for _ in range(warmup):
        call()
    sync()
    samples = []
    deadline = time.perf_counter() + duration_s
    while len(samples) < (iters or MIN_ITERS) or (iters is None and time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return Latency(tuple(samples))
