"""Calibration methods: the activation ranges an INT8 graph is quantized with.

Ranges are symmetric around zero, as TensorRT's explicit quantization needs (zero points are 0). The images
stream through the float model (forward.py) in batches while the collector (collector.py) keeps each observed
tensor's statistics, so memory is bounded by one batch's activations whatever the number of images. Each
method reads its threshold from those statistics as ONNX Runtime's calibrator of the same name and settings
does; tests/test_calibration.py compares the two on the digits fixture.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ..progress import progress_bar
from .collector import Extremes, Histogram, Scratch
from .dataset import CalibrationSet
from .entropy import entropy_threshold
from .forward import Activations

Ranges = dict[str, tuple[float, float]]
# Observed activations per batch. sMLPNet-T at 224 produces 90 MB an image at the inputs of its Conv/MatMul/Gemm
# (170 MB with their outputs), so it calibrates 2 (1) at a time; its time per image is flat from batch 1 to 16
# on the 2-core CI machine, and small models get up to MAX_BATCH.
BATCH_BYTES = 256 << 20
MAX_BATCH = 32


@dataclass(frozen=True)
class Method:
    """A calibration method; ``settings`` are part of the calibration cache key."""

    name: str
    description: str
    settings: dict[str, Any]
    bins: int  # histogram bins per sign over the first image's range; 0: the extremes are enough
    threshold: Callable[[Extremes], float]  # the range's magnitude from the tensor's statistics

    def statistics(self, scratch: Scratch) -> Extremes:
        return Histogram(self.bins, scratch) if self.bins else Extremes()


def largest_magnitude(stats: Extremes) -> float:
    """ONNX Runtime's symmetric MinMax: the largest magnitude seen."""
    return stats.magnitude


def percentile_magnitude(stats: Histogram, percentile: float) -> float:
    """ONNX Runtime's symmetric Percentile: the lower edge of the |x| bin where the cumulative share reaches
    ``percentile``, at most the largest magnitude seen."""
    if not stats.width:  # every value was zero
        return 0.0
    counts = stats.magnitudes()
    cdf = np.cumsum(counts / counts.sum())
    return min(float(np.searchsorted(cdf, percentile / 100.0)) * stats.width, stats.magnitude)


def entropy_magnitude(stats: Histogram, num_quantized_bins: int) -> float:
    """ONNX Runtime's Entropy: the KL-optimal (low, high) edges, clamped to the values seen, made symmetric by
    their larger magnitude (its search is centred on the histogram, whose grid is symmetric here)."""
    if not stats.width:  # every value was zero
        return 0.0
    low, high = entropy_threshold(stats.symmetric(), num_quantized_bins)
    return max(abs(max(low * stats.width, stats.low)), abs(min(high * stats.width, stats.high)))


def _entropy(num_bins: int = 2048, num_quantized_bins: int = 128) -> Method:
    # num_bins span [-max, max] (ONNX Runtime's layout), so num_bins / 2 a side; each candidate threshold is
    # scored against num_quantized_bins levels.
    return Method("entropy", "the threshold minimizing KL divergence",
                  {"symmetric": True, "num_bins": num_bins, "num_quantized_bins": num_quantized_bins},
                  num_bins // 2, partial(entropy_magnitude, num_quantized_bins=num_quantized_bins))


def _percentile(num_bins: int = 2048, percentile: float = 99.99) -> Method:
    # num_bins span [0, max|x|] of the first image.
    return Method("percentile", "the 99.99th percentile of magnitudes",
                  {"symmetric": True, "num_bins": num_bins, "percentile": percentile},
                  num_bins, partial(percentile_magnitude, percentile=percentile))


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
    scratch = Scratch()
    stats = {name: method.statistics(scratch) for name in tensors}

    def observe(batch: np.ndarray) -> int:
        """Take in one batch; returns the bytes its observed tensors took."""
        values = activations(batch)
        for name in tensors:
            stats[name].add(name, values[name])
        bar.update(len(batch))
        return sum(v.nbytes for v in values.values())

    images = calib.images()
    with progress_bar(total=len(calib), desc=f"calibrating ({method.name})", unit="img", quiet=quiet) as bar:
        first_bytes = observe(np.stack(list(islice(images, 1))))
        size = batch_size or batch_size_for(first_bytes)
        if say:
            say(f"{len(tensors)} tensors observed with ONNX Runtime's {activations.provider}, {size} image(s) a batch")
        while batch := list(islice(images, size)):
            observe(np.stack(batch))
    magnitudes = {name: float(method.threshold(s)) for name, s in stats.items()}
    return {name: (-m, m) for name, m in magnitudes.items()}


def batch_size_for(bytes_per_image: int) -> int:
    """Images a batch for ``bytes_per_image`` of observed activations."""
    return max(1, min(MAX_BATCH, BATCH_BYTES // max(bytes_per_image, 1)))
