"""Calibration methods: the activation ranges an INT8 graph is quantized with, from ONNX Runtime's calibrators.

Ranges are symmetric around zero, as TensorRT's explicit quantization needs (zero points are 0). Images go
through the calibrator in chunks, so memory stays bounded by one chunk's activations whatever the sample count.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import INPUT_NAME
from ..errors import CalibrationError
from ..progress import progress_bar

# Inputs of these ops get Q/DQ in the TensorRT form (TensorRT's recommended placement).
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
CHUNK = 16


@dataclass(frozen=True)
class Method:
    """A calibrator and its settings; ``settings`` are part of the calibration cache key."""

    name: str
    description: str
    settings: dict

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[self.name]


METHODS = {
    m.name: m
    for m in (
        Method("minmax", "the largest magnitude seen", {"symmetric": True}),
        # A 2048-bin histogram over [-max, max]; each candidate threshold is scored against 128 quantized levels.
        Method("entropy", "the threshold minimizing KL divergence", {"symmetric": True, "num_bins": 2048,
                                                                     "num_quantized_bins": 128}),
        Method("percentile", "the 99.99th percentile of magnitudes", {"symmetric": True, "num_bins": 2048,
                                                                       "percentile": 99.99}),
    )
}
# Chosen by measurement on the digits fixture (README, "INT8: choosing the calibration method").
DEFAULT_METHOD = "percentile"


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise CalibrationError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}",
                               parameter="method")
    return METHODS[name]


class _Chunk:
    """ONNX Runtime's CalibrationDataReader protocol over one chunk of the calibration inputs."""

    def __init__(self, input_name: str, inputs: np.ndarray):
        self._feeds = iter([{input_name: inputs}])

    def get_next(self):
        return next(self._feeds, None)


def compute_ranges(
    model_path: str | Path, inputs: np.ndarray, method: Method, *, input_name: str = INPUT_NAME, quiet: bool = False
) -> dict[str, tuple[float, float]]:
    """Run ``inputs`` through the float ONNX model and return each quantized tensor's (low, high) range."""
    from onnxruntime.quantization.calibrate import create_calibrator

    with tempfile.TemporaryDirectory(prefix="smlp-calib-") as tmp:
        calibrator = create_calibrator(
            Path(model_path), list(QUANTIZED_OPS), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method.ort_method(), extra_options=dict(method.settings),
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            for start in progress_bar(range(0, len(inputs), CHUNK), desc=f"calibrating ({method.name})", unit="chunk",
                                      quiet=quiet):
                calibrator.collect_data(_Chunk(input_name, inputs[start : start + CHUNK]))
            tensors = calibrator.compute_data()
    return {name: _symmetric(*tensors[name].range_value) for name in tensors}


def _symmetric(low, high) -> tuple[float, float]:
    """(-m, m) for the larger magnitude m. ONNX Runtime's entropy calibrator searches thresholds around its
    histogram's centre, which drifts from zero when later chunks widen the histogram on one side."""
    magnitude = max(abs(float(np.squeeze(low))), abs(float(np.squeeze(high))))  # MinMax gives 1-element arrays
    return -magnitude, magnitude
