"""Calibration that survives outliers: percentile and entropy within 1% of their exact values (numpy over all the
values at once) for one outlier from 10x to 10^6x the bulk's scale in any batch, and for heavy tails; memory that
outliers do not grow; and no range of zero (or not finite) becoming a Q/DQ scale."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from smlp_deploy.calibration import METHODS, TARGETS, compute_ranges, entropy_threshold, load_calibration_set
from smlp_deploy.calibration.collector import KEEP, Histogram, Scratch
from smlp_deploy.calibration.fp8 import fp8_calibrated_tensors, quantize_fp8
from smlp_deploy.calibration.methods import usable_magnitude
from smlp_deploy.calibration.quantize import quantize_qdq
from smlp_deploy.errors import CalibrationError
from smlp_deploy.models import PreprocessConfig
from smlp_deploy.samples import sample_images

BATCHES, BATCH = 8, 50_000
TOLERANCE = 0.01  # the bar, relative to the exact value
PERCENTILE = METHODS["percentile"].settings["percentile"]


def exact_percentile(values: np.ndarray) -> float:
    return float(np.percentile(np.abs(values), PERCENTILE))


def exact_entropy(values: np.ndarray) -> float:
    """The entropy method's definition, on every value at once: ONNX Runtime's KL search (entropy.py, compared
    with ONNX Runtime's own in test_calibration.py) over a histogram of all the values whose bins are the power of
    two that puts ``r``, twice the 99.99th percentile of |x| (to 11 significant bits; at most the largest |x|), at
    num_bins / 4 to num_bins / 2 bins a side; values past r counted in the end bins. No streamed grid involved."""
    settings = METHODS["entropy"].settings
    x = values.astype(np.float64)
    magnitudes = np.abs(x)
    q = float(np.percentile(magnitudes, 99.99, method="inverted_cdf"))  # the ceil(p n)-th smallest
    unit = 2.0 ** (math.frexp(q)[1] - 11)  # q rounded down to 11 significant bits, as the percentile method reads it
    robust = min(float(magnitudes.max()), 2 * math.floor(q / unit) * unit)
    width = 2.0 ** (math.frexp(robust)[1] - 1 - int(math.log2(settings["num_bins"] // 4)))
    bins = int(robust // width) + 1
    index = np.clip(np.floor(x / width), -bins, bins - 1).astype(np.int64) + bins
    low, high = entropy_threshold(np.bincount(index, minlength=2 * bins), settings["num_quantized_bins"])
    return max(abs(max(low * width, x.min())), abs(min(high * width, x.max())))


def normal_with_outlier(scale: float, batch: int) -> list[np.ndarray]:
    """8 x 50k N(0, 1) values, one of them replaced by ``scale`` (negative in the middle batch)."""
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(BATCH, dtype=np.float32) for _ in range(BATCHES)]
    batches[batch][12_345] = -scale if batch == BATCHES // 2 else scale
    return batches


def drawn(draw: Callable[[np.random.Generator, int], np.ndarray]) -> Callable[[], list[np.ndarray]]:
    def batches() -> list[np.ndarray]:
        values = draw(np.random.default_rng(1), BATCHES * BATCH).astype(np.float32)
        return np.split(values, BATCHES)

    return batches


def mixture(batch: int | None) -> Callable[[], list[np.ndarray]]:
    """N(0, 1) with 0.01% of the values drawn at 1000x the scale: spread over the batches, or all in one."""

    def batches() -> list[np.ndarray]:
        rng = np.random.default_rng(2)
        values = rng.standard_normal(BATCHES * BATCH)
        far = rng.random(values.size) < 1e-4
        values[far] *= 1000
        if batch is not None:  # the same values, the far ones moved into one batch
            values = np.concatenate([values[~far][: batch * BATCH], values[far], values[~far][batch * BATCH :]])
        return np.split(values.astype(np.float32), BATCHES)

    return batches


def _one_outlier(scale: float, batch: int) -> Callable[[], list[np.ndarray]]:
    return lambda: normal_with_outlier(scale, batch)


CASES: dict[str, Callable[[], list[np.ndarray]]] = {
    f"N(0,1) + {scale:g}x in batch {batch}": _one_outlier(scale, batch)
    for scale in (1e1, 1e2, 1e3, 5e3, 1e4, 1e5, 1e6)
    for batch in (0, BATCHES // 2, BATCHES - 1)
}
CASES |= {
    "Laplace": drawn(lambda rng, n: rng.laplace(size=n)),
    "Student-t df=2": drawn(lambda rng, n: rng.standard_t(2, size=n)),
    "Student-t df=3": drawn(lambda rng, n: rng.standard_t(3, size=n)),
    "0.01% at 1000x, spread": mixture(None),
    "0.01% at 1000x, in the first batch": mixture(0),
    "0.01% at 1000x, in the last batch": mixture(BATCHES - 1),
}


def calibrate(method: str, batches: list[np.ndarray]) -> float:
    stats = METHODS[method].statistics(Scratch())
    for values in batches:
        stats.add("t", values)
    return float(METHODS[method].threshold(stats))


@pytest.mark.parametrize("case", list(CASES))
def test_percentile_and_entropy_are_within_1_percent_of_exact(case):
    """Before: the grid coarsened to reach the outlier, so 1000x moved the percentile 12% and 10^4x made it 0, and
    an outlier in the first batch set the grid's width."""
    batches = CASES[case]()
    values = np.concatenate(batches)
    for method, exact in (("percentile", exact_percentile(values)), ("entropy", exact_entropy(values))):
        assert calibrate(method, batches) == pytest.approx(exact, rel=TOLERANCE), (method, case)


def test_the_batch_order_changes_no_threshold():
    """The same values in another batch order (the outlier's batch first, in the middle, last) give the very same
    thresholds, though the first batch sets the grid: the methods read past its width."""
    for case in ("N(0,1) + 1e+06x in batch 0", "N(0,1) + 10x in batch 0", "Student-t df=2", "0.01% at 1000x, spread"):
        batches = CASES[case]()
        orders = [batches[i:] + batches[:i] for i in (0, 1, BATCHES // 2, BATCHES - 1)]
        for method in ("percentile", "entropy"):
            thresholds = {calibrate(method, order) for order in orders}
            assert len(thresholds) == 1, (case, method, thresholds)


def test_memory_does_not_grow_with_outliers():
    """An outlier in each of 100 batches is kept as it is (100 values, 10^2x to 10^6x); a bulk that then moves 50x
    coarsens the grid rather than keep more than KEEP values, and a batch wholly past the grid is kept. Either way
    the counts are a direct count of every value inside the final grid, and the kept values are those outside."""
    rng = np.random.default_rng(3)
    histogram = Histogram(1024, Scratch())
    slots = histogram.counts.size
    seen = []
    for i in range(100):
        seen.append(rng.standard_normal(20_000, dtype=np.float32))
        seen[-1][i] = 10.0 ** (2 + i % 5)
        histogram.add("t", seen[-1])
    assert histogram.kept().size == 100 and histogram.counts.size == slots
    width = histogram.width

    for _ in range(10):
        seen.append(rng.standard_normal(20_000, dtype=np.float32) * 50)
        histogram.add("t", seen[-1])
    seen += [rng.uniform(5e3, 6e3, 1_000).astype(np.float32), -seen[-1][:500]]  # batches wholly past the grid
    histogram.add("t", seen[-2])
    histogram.add("t", seen[-1])
    assert histogram.kept().size <= KEEP and histogram.counts.size == slots and histogram.width > width

    values = np.concatenate(seen)
    edge = histogram.slots * histogram.width
    inside = (values >= -edge) & (values < edge)
    index = np.floor(values[inside] / histogram.width).astype(np.int64) + histogram.slots
    assert np.array_equal(histogram.counts, np.bincount(index, minlength=slots))
    assert np.array_equal(np.sort(histogram.kept()), np.sort(values[~inside]))


def test_a_grid_from_the_first_values_reads_as_any_coarser_one():
    """Coarser power-of-two bins are whole-bin merges: signed_counts at 4x the width equals a direct count."""
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.laplace(size=30_000).astype(np.float32), np.float32([3e4, -2e5])])
    histogram = Histogram(1024, Scratch())
    for part in np.array_split(values, 7):
        histogram.add("t", part)
    assert histogram.exponent is not None
    exponent, bins = histogram.exponent + 2, 600
    index = np.clip(np.floor(values.astype(np.float64) / 2.0**exponent), -bins, bins - 1).astype(np.int64) + bins
    assert np.array_equal(histogram.signed_counts(exponent, bins), np.bincount(index, minlength=2 * bins))


# A range of zero, or not finite, is an error naming the tensor.

IMAGE_SIZE = 64


def dead_branch_model(path: Path) -> Path:
    """input -> Conv -> output, and input * 0 -> 'dead' -> Conv -> 'unused': a tensor 0 on every image."""
    weight = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "weight")
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight"], ["output"]),
         helper.make_node("Mul", ["input", "zero"], ["dead"]),
         helper.make_node("Conv", ["dead", "weight"], ["unused"])],
        "dead-branch",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, IMAGE_SIZE, IMAGE_SIZE]),
         helper.make_tensor_value_info("unused", TensorProto.FLOAT, ["N", 4, IMAGE_SIZE, IMAGE_SIZE])],
        [weight, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("method", list(METHODS))
def test_a_tensor_zero_on_every_image_is_an_error_naming_it(tmp_path, method):
    """Before: its range came out (0, 0) and reached the quantizer, which scales a zero range by a made-up 1."""
    model = dead_branch_model(tmp_path / "model.onnx")
    photos = sample_images()
    calib = load_calibration_set(photos[0].parent, PreprocessConfig.for_image_size(IMAGE_SIZE), samples=len(photos),
                                 quiet=True)
    ranges = compute_ranges(model, calib, METHODS[method], ["input"], quiet=True)
    assert ranges["input"][1] > 0
    with pytest.raises(CalibrationError, match=f"tensor 'dead' is 0 everywhere on the {len(photos)} calibration image"):
        compute_ranges(model, calib, METHODS[method], ["input", "dead"], quiet=True)


def test_a_percentile_of_zero_names_the_tensor_and_minmax():
    """More than 99.99% zeros: the percentile is 0 though the tensor is not; minmax would give it a range."""
    stats = METHODS["percentile"].statistics(Scratch())
    values = np.zeros(1_000_000, np.float32)
    values[:10] = 1.5
    stats.add("sparse", values)
    with pytest.raises(CalibrationError, match=r"percentile range of tensor 'sparse' is 0\.0 .* method='minmax'"):
        usable_magnitude("sparse", METHODS["percentile"], stats, 4)
    assert usable_magnitude("sparse", METHODS["minmax"], stats, 4) == 1.5


@pytest.mark.parametrize("bad", [(0.0, 0.0), (-np.inf, np.inf), (np.nan, np.nan)])
def test_the_quantizer_refuses_a_range_that_gives_no_scale(tmp_path, bad):
    """Ranges that do not come from compute_ranges (a cache edited by hand, a caller's own) are checked where they
    become Q/DQ scales."""
    model = dead_branch_model(tmp_path / "model.onnx")
    with pytest.raises(CalibrationError, match=r"the range of tensor '(input|dead)' is .*: a Q/DQ scale needs"):
        quantize_qdq(model, {"input": (-2.0, 2.0), "dead": bad}, TARGETS["tensorrt"])
    assert quantize_qdq(model, {"input": (-2.0, 2.0), "dead": (-1.0, 1.0)}, TARGETS["tensorrt"]).graph.node


@pytest.mark.parametrize("bad", [(0.0, 0.0), (np.nan, np.nan)])
def test_the_fp8_quantizer_refuses_a_range_that_gives_no_scale(tmp_path, bad):
    """FP8 made a scale of 1 up for a zero range."""
    import onnx as onnx_

    from smlp_deploy.export.onnx_graph import export_onnx
    from smlp_deploy.models import create_model

    export_onnx(create_model("test", image_size=64), tmp_path / "model.onnx")
    needed = fp8_calibrated_tensors(onnx_.load(str(tmp_path / "model.onnx")))
    ranges = {name: (-1.0, 1.0) for name in needed}
    assert quantize_fp8(tmp_path / "model.onnx", ranges).graph.node
    with pytest.raises(CalibrationError, match=f"the range of tensor {needed[-1]!r} is .*: a Q/DQ scale needs"):
        quantize_fp8(tmp_path / "model.onnx", {**ranges, needed[-1]: bad})


if __name__ == "__main__":  # the table in docs/calibration.md, "Outliers and heavy tails"
    print("| case | percentile | exact | entropy | exact |\n| --- | --- | --- | --- | --- |")
    for case, make in CASES.items():
        batches = make()
        values = np.concatenate(batches)
        print(f"| {case} | {calibrate('percentile', batches):.4g} | {exact_percentile(values):.4g} "
              f"| {calibrate('entropy', batches):.4g} | {exact_entropy(values):.4g} |")
