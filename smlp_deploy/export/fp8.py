"""The FP8 step of an export: the E4M3 Q/DQ model from ranges calibrated as INT8's are (``export.int8``), on the
tensors the FP8 form quantizes, with FP8's own methods (``calibration.options.Fp8Options``)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import onnx

from ..calibration.fp8 import quantize_fp8
from ..calibration.methods import Ranges
from .precision import convert_to_fp16


def quantize(fp32_model: Path, ranges: Ranges, *, fp16: bool, keep_float: Collection[str] = ()) -> onnx.ModelProto:
    """The FP8 Q/DQ model, the nodes in ``keep_float`` left in float; with ``fp16`` its float parts and scales are
    fp16 (TensorRT's advice for FP8)."""
    model = quantize_fp8(fp32_model, ranges, keep_float=keep_float)
    return convert_to_fp16(model) if fp16 else model
