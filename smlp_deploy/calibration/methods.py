"""Calibration methods: the activation ranges an INT8 graph is quantized with.

Ranges are symmetric around zero, as TensorRT's explicit quantization needs (zero points are 0). The images
stream through the float model (forward.py) in batches while the collector (collector.py) keeps each observed
tensor's statistics, so memory is bounded by one batch's activations whatever the number of images. minmax is
ONNX Runtime's MinMax, bit for bit. percentile and entropy are its Percentile and Entropy read off histograms an
outlier cannot coarsen (collector.py): the percentile within 0.1% of the exact one, entropy's KL search on every
value binned at once, in any batch order. tests/test_calibration.py compares them with ONNX Runtime's and with
exact values on the digits fixture, tests/test_calibration_outliers.py under outliers and heavy tails.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..cpu import cpu_cores
from ..errors import Arg, CalibrationError
from ..progress import progress_bar
from .collector import Extremes, Histogram, Scratch, order_rank
from .dataset import CalibrationSet
from .entropy import entropy_threshold
from .forward import Activations

Ranges = dict[str, tuple[float, float]]
# Observed activations per batch. sMLPNet-T at 224 produces 90 MB an image at the inputs of its Conv/MatMul/Gemm
# (170 MB with their outputs), so it calibrates 2 (1) at a time; its time per image is flat from batch 1 to 16
# on the 2-core CI machine, and small models get up to MAX_BATCH.
BATCH_BYTES = 256 << 20
MAX_BATCH = 32
# Entropy's search spans twice this percentile of |x|: fewer than 0.01% of outliers, however far, leave it be.
ENTROPY_RANGE_PERCENTILE = 99.99


@dataclass(frozen=True)
class Method:
    """A calibration method; ``settings`` are part of the calibration cache key."""

    name: str
    description: str
    settings: dict[str, Any]
    bins: int  # histogram bins per sign (to twice as many) over the first values' robust range; 0: none
    threshold: Callable[[Extremes], float]  # the range's magnitude from the tensor's statistics

    def statistics(self, scratch: Scratch) -> Extremes:
        return Histogram(self.bins, scratch) if self.bins else Extremes()


def largest_magnitude(stats: Extremes) -> float:
    """ONNX Runtime's symmetric MinMax: the largest magnitude seen."""
    return stats.magnitude


def percentile_magnitude(stats: Histogram, percentile: float) -> float:
    """The ``percentile``-th percentile of |x| (the ceil(p n)-th smallest), rounded down to 11 significant bits
    (collector.Histogram.magnitude_rank): within 0.1% of the exact one, in any batch order, however far the
    largest values lie. ONNX Runtime's Percentile reads the lower edge of its bin on a grid whose width the
    largest value sets."""
    return stats.magnitude_rank(order_rank(percentile, stats.size)) if stats.size else 0.0


def entropy_magnitude(stats: Histogram, num_bins: int, num_quantized_bins: int) -> float:
    """ONNX Runtime's Entropy (its KL search, entropy.py) on ``num_bins / 2`` to ``num_bins`` bins of a power-of-two
    width over ``[-r, r]``, r the tensor's robust range: twice its 99.99th percentile of |x|, at most its largest
    |x|. An outlier neither widens the bins nor the search; it is counted in the end bin it clips to. The
    KL-optimal (low, high) edges, clamped to the values seen, made symmetric by their larger magnitude.

    The percentile is read as the percentile method reads it (rounded down to 11 significant bits), so r is the
    same in any batch order, and the counts are those of every value binned at that width directly (the
    collector's grid is as fine or finer), unless the first values' robust range was over twice r."""
    if not stats.size or not stats.magnitude:
        return 0.0
    q = stats.magnitude_rank(order_rank(ENTROPY_RANGE_PERCENTILE, stats.size))
    robust = min(stats.magnitude, 2 * q) if q > 0 else stats.magnitude
    exponent = math.frexp(robust)[1] - 1 - int(math.log2(num_bins // 4))  # num_bins / 4 <= robust / 2**e < x2
    if stats.exponent is not None:
        exponent = max(exponent, stats.exponent)
    width = 2.0**exponent
    bins = max(int(robust // width) + 1, num_quantized_bins // 2)  # fewer only where the grid is coarser
    low, high = entropy_threshold(stats.signed_counts(exponent, bins), num_quantized_bins)
    return max(abs(max(low * width, stats.low)), abs(min(high * width, stats.high)))


def _entropy(num_bins: int = 2048, num_quantized_bins: int = 128) -> Method:
    # At most num_bins span [-r, r] (ONNX Runtime's layout, over [-max, max] there), so at most num_bins / 2 a side;
    # the collector's grid is twice as fine, so that r may come out below the first values' range and still be
    # read exactly. Each candidate threshold is scored against num_quantized_bins levels.
    return Method("entropy", "the threshold minimizing KL divergence",
                  {"symmetric": True, "num_bins": num_bins, "num_quantized_bins": num_quantized_bins},
                  num_bins // 2, partial(entropy_magnitude, num_bins=num_bins, num_quantized_bins=num_quantized_bins))


def _percentile(num_bins: int = 2048, percentile: float = 99.99) -> Method:
    # num_bins / 2 to num_bins span [0, robust range] of the first values.
    return Method("percentile", "the 99.99th percentile of magnitudes",
                  {"symmetric": True, "num_bins": num_bins, "percentile": percentile},
                  num_bins // 2, partial(percentile_magnitude, percentile=percentile))


METHODS = {
    m.name: m
    for m in (
        Method("minmax", "the largest magnitude seen", {"symmetric": True}, 0, largest_magnitude),
        _entropy(),
        _percentile(),
    )
}
# The digits fixture (docs/calibration.md, "Choosing the calibration method"): percentile and entropy keep one more
# held-out image than minmax in the TensorRT form, and percentile calibrates in two thirds of entropy's time.
DEFAULT_METHOD = "percentile"


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise CalibrationError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}",
                               parameter="method")
    return METHODS[name]


def compute_ranges(
    model_path: str | Path,
    calib: CalibrationSet,
    method: Method,
    tensors: Sequence[str],
    *,
    batch_size: int | None = None,
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
) -> Ranges:
    """Stream the images of ``calib`` through the float ONNX model and return the (low, high) range of each of
    ``tensors``.

    The first image runs alone: it sets the histograms' grid and measures what an image's observed tensors
    take, from which the batch size follows (``BATCH_BYTES``, at most ``MAX_BATCH``) unless ``batch_size`` is
    given. Counts add up and the grid is the first image's, so the ranges do not depend on the batch size.
    A set with fewer images than were asked for warns here, where they are used (a reused cache says nothing).
    """
    if len(calib) < calib.requested:
        warnings.warn(f"calibration: {calib.root} has {len(calib)} readable image(s), fewer than the "
                      f"{calib.requested} asked for; calibrating on {len(calib)}", stacklevel=2)
    activations = Activations(model_path, tensors)
    # Each tensor's statistics depend on its own values alone, and numpy's kernels release the GIL: so the tensors
    # are binned on one thread per core between ONNX Runtime's runs, each thread with its own scratch buffers, the
    # k-th of every n tensors in graph order to each (which evens out the stages' sizes). Measured: forward.py.
    workers = max(1, min(cpu_cores(), len(tensors)))
    groups = [list(tensors[i::workers]) for i in range(workers)]
    stats = {name: method.statistics(scratch) for group, scratch in zip(groups, [Scratch() for _ in groups],
                                                                        strict=True) for name in group}

    def take(values: dict[str, np.ndarray], group: list[str]) -> tuple[int, CalibrationError] | None:
        """Add ``group``'s values; the first error, with the tensor's place, so the first in graph order is raised."""
        for name in group:
            try:
                stats[name].add(name, values[name])
            except CalibrationError as exc:
                return tensors.index(name), exc
        return None

    def observe(batch: np.ndarray) -> int:
        """Take in one batch; returns the bytes its observed tensors took."""
        values = activations(batch)
        failed = [f for f in pool.map(partial(take, values), groups) if f is not None]
        if failed:
            raise min(failed, key=lambda f: f[0])[1]
        bar.update(len(batch))
        return sum(v.nbytes for v in values.values())

    images = calib.images()
    with ThreadPoolExecutor(workers, thread_name_prefix="calibration") as pool, \
            progress_bar(total=len(calib), desc=f"calibrating ({method.name})", unit="img", quiet=quiet) as bar:
        first_bytes = observe(np.stack(list(islice(images, 1))))
        size = batch_size or batch_size_for(first_bytes)
        if say:
            say(f"{len(tensors)} tensors observed with ONNX Runtime's {activations.provider}, {size} image(s) a batch")
        while batch := list(islice(images, size)):
            observe(np.stack(batch))
    magnitudes = {name: usable_magnitude(name, method, s, len(calib)) for name, s in stats.items()}
    return {name: (-m, m) for name, m in magnitudes.items()}


def usable_magnitude(name: str, method: Method, stats: Extremes, images: int) -> float:
    """``method``'s range magnitude for the tensor ``name``. Zero or not finite raises: as a Q/DQ scale it would
    quantize the tensor to nothing, or to whatever scale the quantizer makes up for it."""
    magnitude = float(method.threshold(stats))
    if math.isfinite(magnitude) and magnitude > 0:
        return magnitude
    if not stats.magnitude:  # decided: an error, not a tiny scale; quantizing a tensor never seen nonzero is a guess
        raise CalibrationError(f"tensor {name!r} is 0 everywhere on the {images} calibration image(s), so it has no "
                               "range to quantize it with: calibrate on images on which it is not 0, or check the "
                               "model (a tensor that is always 0 is a branch that does nothing)", parameter="calib_dir")
    raise CalibrationError(f"the {method.name} range of tensor {name!r} is {magnitude!r} on the {images} calibration "
                           f"image(s), though its largest magnitude is {stats.magnitude:.6g} (almost all of its values "
                           "are 0): calibrate with ", Arg("method", "minmax"), ", or on images on which it is not 0",
                           parameter="method")


def batch_size_for(bytes_per_image: int) -> int:
    """Images a batch for ``bytes_per_image`` of observed activations."""
    return max(1, min(MAX_BATCH, BATCH_BYTES // max(bytes_per_image, 1)))
