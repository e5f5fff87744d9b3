"""Streaming statistics of activation tensors: exact extremes and histograms on a fixed grid, in memory that
does not depend on how many images pass through.

ONNX Runtime's histogram calibrators set a tensor's bin width from the first batch (its largest magnitude
over the number of bins) and add whole bins when later batches reach further. :class:`Histogram` counts on the
same grid, so the thresholds read from it agree with theirs, but it bins by integer index (``floor(x / w)``,
then ``np.bincount``) over blocks that stay in the CPU cache, where ONNX Runtime calls ``np.histogram`` with
explicit edges (which sorts every batch) on every tensor it saw.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CalibrationError

# Recorded in the calibration cache: ranges from another version of this collector are recalibrated.
VERSION = 1
ROOM = 4  # slots per sign, in multiples of the initial bins: the range may grow 4x before the grid coarsens
BLOCK = 1 << 16  # values binned per step: 64K float32 and their indices stay in L2 (2.2-2.6 ns a value, against
# 3.1-3.3 ns for whole tensors, on the 2-core CI machine)


class Scratch:
    """The block buffers histograms share (768 KiB; one per tensor would be 0.2 GiB over 300 tensors)."""

    def __init__(self) -> None:
        self.scaled, self.index = np.empty(BLOCK, np.float32), np.empty(BLOCK, np.intp)


class Extremes:
    """The smallest and largest value of a tensor: all the minmax method needs."""

    def __init__(self) -> None:
        self.low, self.high = math.inf, -math.inf
        self.size = 0

    @property
    def magnitude(self) -> float:
        return max(-self.low, self.high, 0.0)

    def add(self, name: str, values: np.ndarray) -> None:
        """Take in a batch of the tensor ``name``."""
        if values.size:
            self._record(name, float(values.min()), float(values.max()), values.size)

    def _record(self, name: str, low: float, high: float, size: int) -> None:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise CalibrationError(f"tensor {name!r} of the float model is not finite (NaN or inf) on the calibration "
                                   "images: check the model's weights and the images' preprocessing")
        self.low, self.high = min(self.low, low), max(self.high, high)
        self.size += size


class Histogram(Extremes):
    """The extremes and a count of values per bin ``[k w, (k + 1) w)`` for ``-top <= k < top``.

    As in ONNX Runtime's histograms, the first batch sets the grid, ``w`` = its largest magnitude over ``bins``
    and ``top = bins``; a later batch reaching past ``top * w`` widens the range by whole bins, and a value
    exactly at ``top * w`` counts in the last bin (``np.histogram`` closes its last bin; saturated pixels sit
    there). ``ROOM * bins`` slots per sign are allocated up front, so the range may grow ``ROOM`` times before
    anything moves; a batch reaching further coarsens the grid: pairs of bins merge and ``w`` doubles, as often
    as needed. Merging is exact (every edge stays a multiple of the old width, no count moves across a value),
    and the grid only coarsens once the range has grown past ``ROOM * bins * w``, so ``w <= max|x| / bins``
    always: at least ``bins`` bins span ``[0, max|x|]``, and a threshold read off the grid is within one bin, at
    most ``max|x| / bins``, of the same threshold on exact values. Memory: ``2 * ROOM * bins`` counts, whatever
    the number of images. The counts do not depend on how the images are batched after the first batch.
    """

    def __init__(self, bins: int, scratch: Scratch) -> None:
        super().__init__()
        self.bins, self.slots = bins, ROOM * bins
        self.width = 0.0  # set by the first nonzero batch
        self.top = 0  # bins a side
        self._edge = 0.0  # top * width, or the first batch's largest magnitude exactly (ONNX Runtime's threshold)
        # Slot slots + k holds bin k; outside [slots - top, slots + top) only while a batch is being counted.
        self.counts = np.zeros(2 * self.slots, dtype=np.int64)
        self._scratch = scratch

    def add(self, name: str, values: np.ndarray) -> None:
        values = values.reshape(-1)
        if not values.size:
            return
        if not self.width:  # the first batch sets the grid: its extremes are needed before any value is binned
            low, high = float(values.min()), float(values.max())
            self._record(name, low, high, values.size)
            largest = max(-low, high)
            if not largest:  # all zero so far: no scale yet, and every value is in bin 0 of any grid
                self.counts[self.slots] += values.size
                return
            self.width, self.top, self._edge = largest / self.bins, self.bins, largest
            self._count(name, values)
        else:
            low, high = self._count(name, values)
            self._record(name, low, high, values.size)
            largest = max(-low, high)
            if largest > self._edge:  # widen by whole bins, before the batch counts (as ONNX Runtime does)
                self.top = int(largest // self.width) + 1
                self._edge = self.top * self.width
                while self.top > self.slots:
                    self._coarsen()
        self._close_edges()

    def _count(self, name: str, values: np.ndarray) -> tuple[float, float]:
        """``counts[slots + floor(x / w)] += 1`` for each x, a cache-sized block at a time, in float32 (exact up
        to the rounding of x / w: integers below 2^24 are exact); returns the extremes, taken from the same
        blocks while they are in cache. A block reaching past the allocated slots coarsens the grid first."""
        scaled, index = self._scratch.scaled, self._scratch.index
        low, high = math.inf, -math.inf
        for begin in range(0, values.size, BLOCK):
            block = values[begin : begin + BLOCK]
            n = block.size
            block_low, block_high = block.min(), block.max()
            if not (np.isfinite(block_low) and np.isfinite(block_high)):
                self._record(name, float(block_low), float(block_high), 0)  # raises
            while self._slot(block_low) < 0 or self._slot(block_high) >= 2 * self.slots:
                self._coarsen()
            low, high = min(low, float(block_low)), max(high, float(block_high))
            np.multiply(block, np.float32(1 / self.width), out=scaled[:n])
            np.floor(scaled[:n], out=scaled[:n])
            np.add(scaled[:n], np.float32(self.slots), out=index[:n], casting="unsafe")
            found = np.bincount(index[:n])
            self.counts[: found.size] += found
        return low, high

    def _slot(self, value: np.float32) -> int:
        """The slot of ``value``, computed as ``_count`` computes it."""
        return int(np.floor(value * np.float32(1 / self.width))) + self.slots

    def _close_edges(self) -> None:
        """Counts past the range's edges (values exactly at an edge, or rounded onto it) go into the edge bins."""
        first, last = self.slots - self.top, self.slots + self.top - 1
        self.counts[first] += self.counts[:first].sum()
        self.counts[last] += self.counts[last + 1 :].sum()
        self.counts[:first] = 0
        self.counts[last + 1 :] = 0

    def _coarsen(self) -> None:
        """Double the bin width: slot ``slots + k`` moves to ``slots + floor(k / 2)``."""
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts[:] = 0
        self.counts[self.slots // 2 : self.slots // 2 + merged.size] = merged
        self.width *= 2
        self.top = (self.top + 1) // 2
        self._edge = self.top * self.width

    def magnitudes(self) -> np.ndarray:
        """Counts of |x| per bin ``[k w, (k + 1) w)``, k from 0 to ``top - 1``."""
        return self.counts[self.slots : self.slots + self.top] + self.counts[self.slots - self.top : self.slots][::-1]

    def symmetric(self) -> np.ndarray:
        """The signed counts over ``[-top w, top w]``: an even number of bins, zero at the centre edge."""
        return self.counts[self.slots - self.top : self.slots + self.top]
