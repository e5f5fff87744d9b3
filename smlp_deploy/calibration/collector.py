"""Streaming statistics of activation tensors: exact extremes, and histograms that an outlier cannot coarsen, in
memory that does not depend on how many images pass through.

ONNX Runtime's histogram calibrators, and this collector before version 2, take the bin width from the first
batch's largest magnitude and merge bins once a later value reaches past the grid. One value far out then costs
the whole tensor its resolution: on 8 x 50k N(0,1) values with one value at 1e4 the 99.99th percentile came out
2.37 (it is 3.87), and 0 with that value in the first batch, whose largest magnitude set the grid.

:class:`Histogram` keeps a fine grid for the bulk and the values past it exactly:

* the grid's width is a power of two, taken from a *robust* range of the first values (twice their 99.9th
  percentile of |x|, at most their largest), so an outlier among them does not set the scale; every coarser
  power-of-two grid is an exact merge of its bins, so a method can read its threshold on the grid that *all*
  the values call for (methods.py), whatever the batch order;
* a value past the grid (4-8x that range) is kept as it is, up to ``KEEP`` of them; only when more than that
  many lie past it does the grid coarsen (pairs of bins merge, exactly), to keep at most half of them: a bulk
  that moved coarsens the grid, an outlier does not.

Weighed against it: a log-spaced histogram (the float's exponent and leading mantissa bits as the bin) has the
relative resolution a percentile wants, but the KL search of entropy needs a linear grid, and a signed log
histogram's bincount spans every octave from the bulk's smallest values to its largest in each block, where this
grid's spans the block's bins; a buffer of the k largest values alone gives exact percentiles only while k grows
with the number of values. The kernel that bins a block is the previous version's.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CalibrationError

# Recorded in the calibration cache: ranges from another version of this collector are recalibrated.
VERSION = 2
ROOM = 8  # slots per sign, in multiples of the bins over the first values' robust range: room to grow 4-8x
BLOCK = 1 << 16  # values binned per step: 64K float32 and their indices stay in L2 (2.2-2.6 ns a value, against
# 3.1-3.3 ns for whole tensors, on the 2-core CI machine)
KEEP = 1 << 15  # values past the grid kept exactly (128 KiB a tensor at most, only while there are such values)
FIRST = 1 << 14  # values kept before the grid is set: its robust range ignores up to 16 outliers among them
ROBUST_PERCENTILE = 99.9  # of the first values' |x|: the grid spans twice it (at most their largest |x|)
RESOLUTION = 10  # significant bits after the leading one that magnitude_rank keeps (0.1%)
SMALLEST_EXPONENT = -120  # widths below 2^-120 would overflow float32's 2^-exponent scale


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


def robust_range(magnitudes: np.ndarray, percentile: float) -> float:
    """Twice the ``percentile`` of ``magnitudes`` (the ceil(p n)-th smallest), at most their largest; their largest
    where that percentile is 0 (a mostly-zero tensor)."""
    largest = float(magnitudes.max())
    rank = order_rank(percentile, magnitudes.size)
    q = float(np.partition(magnitudes, rank - 1)[rank - 1])
    return min(largest, 2 * q) if q > 0 else largest


def order_rank(percentile: float, size: int) -> int:
    """The rank, from 1, of the ``percentile``-th percentile among ``size`` sorted values: ceil(p n), with p n
    rounded first so that 99.99% of 400,000 is 399,960 and not the next value up."""
    return min(max(math.ceil(round(percentile / 100 * size, 6)), 1), size)


class Histogram(Extremes):
    """The extremes, the count of values per bin ``[j w, (j + 1) w)`` for ``-slots <= j < slots`` with
    ``w = 2**exponent``, and the values outside those bins as they are (``kept``).

    The first batch (every k-th of its values, FIRST to twice as many), or if it is smaller the first ``FIRST``
    values, set the grid: ``w`` is the power of two that puts their robust range (:func:`robust_range`) between
    ``bins`` and ``2 * bins`` bins, and ``slots = ROOM * bins`` a side. Until then every value is kept. A value
    outside the slots is kept; when more than ``KEEP`` are, the width doubles (pairs of bins merge, no count crosses
    a value) until at most ``KEEP / 2`` remain outside, and the others are binned. Memory: ``2 * ROOM * bins``
    counts and at most ``KEEP`` values (plus one batch while it is counted), whatever the number of images. The
    counts depend on the order of the first ``FIRST`` values only through the width, which the methods read past
    (:meth:`signed_counts` merges to any coarser width).
    """

    def __init__(self, bins: int, scratch: Scratch) -> None:
        super().__init__()
        self.bins, self.slots = bins, ROOM * bins
        self.exponent: int | None = None  # log2 of the bin width, set with the grid
        self.counts = np.zeros(2 * self.slots, dtype=np.int64)  # slot slots + j holds bin j
        self.zeros = 0  # values exactly 0 seen before the grid was set (they join bin 0 when it is)
        self._kept: list[np.ndarray] = []
        self._kept_size = 0
        self._scratch = scratch

    @property
    def width(self) -> float:
        return 0.0 if self.exponent is None else 2.0**self.exponent

    def kept(self) -> np.ndarray:
        """The values outside the grid (all nonzero values before it is set), as float32."""
        if len(self._kept) > 1:
            self._kept = [np.concatenate(self._kept)]
        return self._kept[0] if self._kept else np.empty(0, np.float32)

    def add(self, name: str, values: np.ndarray) -> None:
        values = values.reshape(-1)
        if not values.size:
            return
        if self.exponent is None:
            low, high = float(values.min()), float(values.max())
            self._record(name, low, high, values.size)
            if not (low or high):  # all zero: no scale yet, and zero is in bin 0 of any grid
                self.zeros += values.size
                return
            if self._kept_size + values.size < FIRST:
                self._keep(values.astype(np.float32))
                return
            # The first batch, or the first FIRST values whatever the batches (the order of values is the same
            # for any batch size: compute_ranges runs the first image alone, then images in order). Of a larger
            # batch every k-th value, FIRST to 2 * FIRST of them: partitioning all of a first image made its
            # statistics 1.5x the previous collector's (calibration_speed.py --statistics-images 1).
            first = np.concatenate([self.kept(), values]) if self._kept else values
            self._kept, self._kept_size = [], 0
            sample = first[:FIRST] if first is not values else first[:: first.size // FIRST]
            self._set_grid(robust_range(np.abs(sample), ROBUST_PERCENTILE))
            self._count(first)
        else:
            low, high = self._count(values)
            self._record(name, low, high, values.size)
        if self._kept_size > KEEP:
            self._coarsen()

    def _set_grid(self, robust: float) -> None:
        """``w = 2**exponent`` with ``bins <= robust / w < 2 * bins``."""
        self.exponent = max(math.frexp(robust)[1] - 1 - int(math.log2(self.bins)), SMALLEST_EXPONENT)
        self.counts[self.slots] += self.zeros
        self.zeros = 0

    def _count(self, values: np.ndarray) -> tuple[float, float]:
        """``counts[slots + floor(x / w)] += 1`` for each x inside the slots, a cache-sized block at a time, in
        float32 (``x * 2**-exponent`` is exact, and so are integers below 2^24); values outside are kept. Returns
        the extremes, taken from the same blocks while they are in cache."""
        assert self.exponent is not None
        scaled, index = self._scratch.scaled, self._scratch.index
        scale = np.float32(2.0**-self.exponent)
        edge = self.slots * 2.0**self.exponent  # the slots hold [-edge, edge)
        low, high = math.inf, -math.inf
        for begin in range(0, values.size, BLOCK):
            block = values[begin : begin + BLOCK]
            n = block.size
            block_low, block_high = float(block.min()), float(block.max())
            if not (math.isfinite(block_low) and math.isfinite(block_high)):
                return block_low, block_high  # _record raises, naming the tensor
            low, high = min(low, block_low), max(high, block_high)
            np.multiply(block, scale, out=scaled[:n])
            np.floor(scaled[:n], out=scaled[:n])
            # the block's lowest bin in the slots (the last one if the whole block lies past them)
            lowest = min(max(math.floor(block_low * float(scale)), -self.slots), self.slots - 1)
            outside = [np.flatnonzero(block >= edge)] if block_high >= edge else []
            outside += [np.flatnonzero(block < -edge)] if block_low < -edge else []
            for where in outside:  # rare: keep those values, and count them out of the lowest bin once counted
                self._keep(block[where].astype(np.float32))
                scaled[where] = lowest
            # bincount from the block's lowest bin: its output spans the block's bins, not every slot below them
            np.subtract(scaled[:n], np.float32(lowest), out=index[:n], casting="unsafe")
            found = np.bincount(index[:n])
            start = self.slots + lowest
            self.counts[start : start + found.size] += found
            self.counts[start] -= sum(where.size for where in outside)
        return low, high

    def _keep(self, values: np.ndarray) -> None:
        if values.size:
            self._kept.append(values)
            self._kept_size += values.size

    def _coarsen(self) -> None:
        """Double the width until at most ``KEEP / 2`` kept values lie outside the slots, and bin the others."""
        assert self.exponent is not None
        kept = self.kept().astype(np.float64)
        steps = 0
        while np.count_nonzero(~self._inside(kept, self.exponent + steps)) > KEEP // 2:
            steps += 1
        for _ in range(steps):  # slot slots + j moves to slots + floor(j / 2)
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts[:] = 0
            self.counts[self.slots // 2 : self.slots // 2 + merged.size] = merged
        self.exponent += steps
        inside = self._inside(kept, self.exponent)
        np.add.at(self.counts, np.floor(kept[inside] * 2.0**-self.exponent).astype(np.intp) + self.slots, 1)
        self._kept = [kept[~inside].astype(np.float32)]
        self._kept_size = self._kept[0].size

    def _inside(self, values: np.ndarray, exponent: int) -> np.ndarray:
        edge = self.slots * 2.0**exponent
        return (values >= -edge) & (values < edge)

    def magnitude_rank(self, rank: int) -> float:
        """The ``rank``-th smallest |x| (from 1), rounded down to a multiple of ``2**(floor(log2 |x|) - RESOLUTION)``
        (a relative error below 2^-10), or of the bin width where that is coarser. Rounded so, it is the same
        whether the value was kept or binned, on whatever grid the first values set: bin edges are powers of two
        too, so a bin's lower edge rounds as every value in the bin does."""
        mags = self.counts[self.slots :] + self.counts[: self.slots][::-1]  # bin k: |x| in [k w, (k + 1) w]
        binned = int(mags.sum()) + self.zeros
        if rank > binned:
            kept = np.abs(self.kept())
            value = float(np.partition(kept, rank - binned - 1)[rank - binned - 1])
        elif self.exponent is None:  # only zeros binned
            return 0.0
        else:
            value = float(np.searchsorted(np.cumsum(mags), rank)) * self.width  # its bin's lower edge
        if not value:
            return 0.0
        exponent = math.frexp(value)[1] - 1 - RESOLUTION
        if self.exponent is not None:
            exponent = max(exponent, self.exponent)
        return math.floor(value * 2.0**-exponent) * 2.0**exponent

    def signed_counts(self, exponent: int, bins: int) -> np.ndarray:
        """Counts per bin ``[j v, (j + 1) v)``, ``v = 2**exponent``, for ``-bins <= j < bins`` (index ``bins + j``),
        values past either end in the end bin; exact (whole bins merge) for ``exponent >= self.exponent``."""
        if self.exponent is not None and exponent < self.exponent:
            raise ValueError(f"bins of 2^{exponent} are finer than the grid's 2^{self.exponent}")
        out = np.zeros(2 * bins, dtype=np.int64)
        out[bins] += self.zeros
        if self.exponent is not None:
            grid = np.arange(-self.slots, self.slots) >> (exponent - self.exponent)  # floor division
            np.add.at(out, np.clip(grid, -bins, bins - 1) + bins, self.counts)
        kept = np.floor(self.kept().astype(np.float64) * 2.0**-exponent)
        np.add.at(out, np.clip(kept, -bins, bins - 1).astype(np.intp) + bins, 1)
        return out
