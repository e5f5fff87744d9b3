"""What an export asks of calibration, per precision: the images, how many, the method, the cache and the seed
(shared by INT8 and FP8), and what each precision adds: INT8 its target forms, FP8 its own methods. Each options
record checks itself before any work, and names the tensors its Q/DQ forms need ranges for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from ..errors import CalibrationError
from .cache import check_cache_file
from .dataset import DEFAULT_SAMPLES, check_arguments
from .fp8 import METHODS as FP8_METHODS
from .fp8 import fp8_calibrated_tensors
from .methods import DEFAULT_METHOD, get_method
from .quantize import TARGETS, calibrated_tensors

# minmax: on the digits fixture (tests/digits.py --compare-fp8) it is as close to FP32 as percentile (held-out
# cosine 0.999737 against 0.999736, same top-1) at two thirds of its calibration time, and it is the FP8
# calibration NVIDIA's own tools default to ("max").
FP8_DEFAULT_METHOD = "minmax"


@dataclass(frozen=True)
class CalibrationOptions:
    """Where the calibration images are and how they are used; a precision's options add what is its own."""

    calib_dir: Path
    samples: int = DEFAULT_SAMPLES
    method: str = DEFAULT_METHOD
    cache: Path | None = None  # default: the precision's cache_name in the export directory
    seed: int = 0
    precision: ClassVar[str]  # what the calibration cache is made for
    cache_name: ClassVar[str]  # the cache's default name in the export directory

    @property
    def targets(self) -> tuple[str, ...]:
        """The forms the ranges are for."""
        raise NotImplementedError

    def check(self) -> None:
        """Fail before any work on settings that cannot work: the method, the folder and sample count, a cache
        that is not this precision's."""
        self.check_method()
        check_arguments(Path(self.calib_dir), self.samples)
        if self.cache is not None:
            check_cache_file(Path(self.cache), self.precision)

    def check_method(self) -> None:
        raise NotImplementedError

    def cache_path(self, export_dir: Path) -> Path:
        return Path(self.cache) if self.cache else export_dir / self.cache_name

    def tensors(self, model: onnx.ModelProto) -> list[str]:
        """The activations this precision's forms need ranges for."""
        raise NotImplementedError


@dataclass(frozen=True)
class Int8Options(CalibrationOptions):
    """INT8 calibration, for the Q/DQ forms in ``targets`` (``tensorrt``, ``cpu``)."""

    targets: tuple[str, ...] = ("tensorrt",)
    precision: ClassVar[str] = "int8"
    cache_name: ClassVar[str] = "calibration.cache.json"

    def check_method(self) -> None:
        get_method(self.method)
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise CalibrationError(f"INT8 targets must be among {', '.join(TARGETS)}, got "
                                   f"{', '.join(self.targets) or 'none'}", parameter="targets")

    def tensors(self, model: onnx.ModelProto) -> list[str]:
        return calibrated_tensors(model, self.targets)


@dataclass(frozen=True)
class Fp8Options(CalibrationOptions):
    """FP8 (E4M3) calibration, for the one FP8 form, TensorRT's."""

    method: str = FP8_DEFAULT_METHOD
    precision: ClassVar[str] = "fp8"
    cache_name: ClassVar[str] = "calibration.fp8.cache.json"

    @property
    def targets(self) -> tuple[str, ...]:
        return ("tensorrt",)

    def check_method(self) -> None:
        if self.method not in FP8_METHODS:
            raise CalibrationError(f"FP8 calibrates with {' or '.join(FP8_METHODS)}, not {self.method!r} (entropy "
                                   "scores ranges against INT8's evenly spaced levels)", parameter="method")

    def tensors(self, model: onnx.ModelProto) -> list[str]:
        return fp8_calibrated_tensors(model)


def check_separate_caches(int8: Int8Options | None, fp8: Fp8Options | None) -> None:
    """INT8 and FP8 each keep their own cache: one path named for both is refused before any work."""
    if int8 is not None and fp8 is not None and int8.cache is not None and fp8.cache is not None and \
            Path(int8.cache).resolve() == Path(fp8.cache).resolve():
        raise CalibrationError(f"INT8 and FP8 keep their ranges in separate calibration caches, and "
                               f"{str(fp8.cache)!r} is named for both: name one for each, or leave the path out "
                               f"({Int8Options.cache_name} and {Fp8Options.cache_name} in the export folder)",
                               parameter="cache")
