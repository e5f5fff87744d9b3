"""Timing callables: warm-up excluded, a fixed count or a time budget, the device synchronized per call, and
several callables interleaved so that their ratios survive a noisy machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

R = TypeVar("R")
MIN_ITERS = 5
BLOCK = 3  # timed calls per callable per round of measure_interleaved


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call: medians are quoted, the spread says how much to trust them."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    n: int


@dataclass(frozen=True)
class Latency:
    """Per-call wall times in milliseconds."""

    samples_ms: tuple[float, ...]

    def summary(self) -> LatencyStats:
        s = np.asarray(self.samples_ms)
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        return LatencyStats(float(p50), float(p90), float(p99), float(s.mean()), float(s.std()), float(s.min()), len(s))


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
    return measure_interleaved({"call": call}, warmup=warmup, iters=iters, duration_s=duration_s, sync=sync)["call"]


def measure_interleaved(
    calls: Mapping[str, Callable[[], R]],
    *,
    warmup: int = 3,
    iters: int | None = None,
    duration_s: float = 3.0,
    block: int = BLOCK,
    sync: Callable[[], None] = lambda: None,
    on_result: Callable[[str, R], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Latency]:
    """Time several callables in rounds: each in turn makes ``block`` timed calls, after one untimed call
    whenever there is more than one callable.

    On a shared machine, slow phases then fall on every callable alike, so the ratios of their medians hold
    even when the absolute times drift. The untimed call is there because the first call after another
    backend ran is slow (up to 1.4x on a 2-core CPU: the other's thread pool still holds the cores, its data
    the caches). ``iters`` is the number of timed calls per callable; otherwise each callable is timed until
    its timed calls add up to ``duration_s`` (at least MIN_ITERS calls). ``on_result`` receives the name and
    return value of every timed call, for figures taken inside the calls; ``progress`` what starts next
    (``"warm-up: NAME"``, ``"round 2: NAME"``), between calls, never inside a timed one.
    """
    if not calls:
        raise ValueError("measure_interleaved needs at least one callable")
    say = progress or (lambda what: None)
    for name, call in calls.items():
        say(f"warm-up: {name}")
        for _ in range(warmup):
            call()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    spent_ms = dict.fromkeys(calls, 0.0)
    wanted = iters or MIN_ITERS

    def more(name: str) -> int:
        done = len(samples[name])
        if done < wanted:
            return min(block, wanted - done)
        return block if iters is None and spent_ms[name] < duration_s * 1e3 else 0

    rounds = 0
    while any(more(name) for name in calls):
        rounds += 1
        for name, call in calls.items():
            if not (count := more(name)):
                continue
            say(f"round {rounds}: {name}")
            if len(calls) > 1:
                call()
                sync()
            for _ in range(count):
                start = time.perf_counter()
                result = call()
                sync()
                samples[name].append((time.perf_counter() - start) * 1e3)
                spent_ms[name] += samples[name][-1]
                if on_result:
                    on_result(name, result)
    return {name: Latency(tuple(times)) for name, times in samples.items()}
