"""The FP8 steps of an export: calibrate on the user's images (or reuse FP8's own cache), then write the Q/DQ model.

Calibration is INT8's (the streaming collector, the cache keyed by everything the ranges depend on), on the
tensors the FP8 form quantizes, with a method that suits FP8's range: the largest magnitude by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from ..calibration.dataset import DEFAULT_SAMPLES
from ..calibration.fp8 import METHODS, fp8_calibrated_tensors, quantize_fp8
from ..calibration.methods import Ranges
from ..errors import CalibrationError
from .int8 import CACHE_NAME as INT8_CACHE_NAME
from .int8 import CalibrationOptions, Int8Options
from .precision import convert_to_fp16

CACHE_NAME = "calibration.fp8.cache.json"
# minmax: on the digits fixture (tests/digits.py --compare-fp8) it is as close to FP32 as percentile (held-out
# cosine 0.999737 against 0.999736, same top-1) at two thirds of its calibration time, and it is the FP8
# calibration NVIDIA's own tools default to ("max").
DEFAULT_METHOD = "minmax"


@dataclass(frozen=True)
class Fp8Options(CalibrationOptions):
    """Where the calibration images are and how they are used for FP8."""

    calib_dir: Path
    samples: int = DEFAULT_SAMPLES
    method: str = DEFAULT_METHOD
    cache: Path | None = None  # default: calibration.fp8.cache.json in the export directory
    seed: int = 0
    precision: ClassVar[str] = "fp8"  # what the calibration cache is made for
    cache_name: ClassVar[str] = CACHE_NAME

    @property
    def targets(self) -> tuple[str, ...]:
        return ("tensorrt",)  # the one FP8 form is TensorRT's

    def check(self) -> None:
        """Fail before any work on settings that cannot work."""
        if self.method not in METHODS:
            raise CalibrationError(f"FP8 calibrates with {' or '.join(METHODS)}, not {self.method!r} (entropy scores "
                                   "ranges against INT8's evenly spaced levels)", parameter="method")
        self.check_images_and_cache()

    def tensors(self, model: onnx.ModelProto) -> list[str]:
        return fp8_calibrated_tensors(model)


def quantize(fp32_model: Path, ranges: Ranges, *, fp16: bool) -> onnx.ModelProto:
    """The FP8 Q/DQ model; with ``fp16`` its float parts and scales are fp16 (TensorRT's advice for FP8)."""
    model = quantize_fp8(fp32_model, ranges)
    return convert_to_fp16(model) if fp16 else model


def check_separate_caches(int8_options: Int8Options | None, options: Fp8Options) -> None:
    """INT8 and FP8 each keep their own cache: one path named for both is refused before any work."""
    int8_cache = int8_options.cache if int8_options else None
    if int8_cache is not None and options.cache is not None and \
            Path(int8_cache).resolve() == Path(options.cache).resolve():
        raise CalibrationError(f"INT8 and FP8 keep their ranges in separate calibration caches, and "
                               f"{str(options.cache)!r} is named for both: name one for each, or leave the path out "
                               f"({INT8_CACHE_NAME} and {CACHE_NAME} in the export folder)", parameter="cache")
