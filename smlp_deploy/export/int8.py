"""The INT8 steps of an export: calibrate on the user's images (or reuse the cache), then write Q/DQ models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from ..calibration.cache import cache_key, check_cache_file, read_cache, write_cache
from ..calibration.dataset import DEFAULT_SAMPLES, CalibrationSet, check_arguments, load_calibration_set
from ..calibration.methods import DEFAULT_METHOD, Ranges, compute_ranges, get_method
from ..calibration.quantize import TARGETS, Target, calibrated_tensors, quantize_qdq
from ..errors import CalibrationError
from ..fileio import sha256_file
from ..manifest import CalibrationRecord
from ..preprocess_config import PreprocessConfig
from ..records import to_json
from .precision import convert_to_fp16

CACHE_NAME = "calibration.cache.json"


class CalibrationOptions:
    """What calibration reads of a precision's options (:class:`Int8Options`, ``fp8.Fp8Options``): the images, the
    method, the cache; each precision says which tensors it needs ranges for."""

    calib_dir: Path
    samples: int
    method: str
    cache: Path | None
    seed: int
    precision: ClassVar[str]  # what the calibration cache is made for
    cache_name: ClassVar[str]  # the cache's default name in the export directory

    @property
    def targets(self) -> tuple[str, ...]:
        """The forms the ranges are for."""
        raise NotImplementedError

    def check(self) -> None:
        """Fail before any work on settings that cannot work."""
        raise NotImplementedError

    def check_images_and_cache(self) -> None:
        """Fail before any work on a folder or sample count that cannot work, or a cache that is not this
        precision's."""
        check_arguments(Path(self.calib_dir), self.samples)
        if self.cache is not None:
            check_cache_file(Path(self.cache), self.precision)

    def cache_path(self, export_dir: Path) -> Path:
        return Path(self.cache) if self.cache else export_dir / self.cache_name

    def tensors(self, model: onnx.ModelProto) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Int8Options(CalibrationOptions):
    """Where the calibration images are and how they are used."""

    calib_dir: Path
    samples: int = DEFAULT_SAMPLES
    method: str = DEFAULT_METHOD
    cache: Path | None = None  # default: calibration.cache.json in the export directory
    targets: tuple[str, ...] = ("tensorrt",)
    seed: int = 0
    precision: ClassVar[str] = "int8"  # what the calibration cache is made for
    cache_name: ClassVar[str] = CACHE_NAME

    def check(self) -> None:
        """Fail before any work on settings that cannot work."""
        get_method(self.method)
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise CalibrationError(f"INT8 targets must be among {', '.join(TARGETS)}, got "
                                   f"{', '.join(self.targets) or 'none'}", parameter="targets")
        self.check_images_and_cache()

    def tensors(self, model: onnx.ModelProto) -> list[str]:
        """The activations every target of these options needs ranges for."""
        return calibrated_tensors(model, self.targets)


def read_calibration_images(options: CalibrationOptions, preprocess: PreprocessConfig, *,
                            quiet: bool) -> CalibrationSet:
    return load_calibration_set(options.calib_dir, preprocess, samples=options.samples, seed=options.seed,
                                quiet=quiet)


def calibrate(
    fp32_model: Path,
    calib: CalibrationSet,
    preprocess: PreprocessConfig,
    options: CalibrationOptions,
    *,
    say: Callable[[str], None],
    quiet: bool,
) -> tuple[Ranges, CalibrationRecord]:
    """The activation ranges every form of ``options`` needs (its INT8 targets, or the FP8 form), of
    ``fp32_model`` on ``calib``: from the cache when it holds them for exactly these inputs, else calibrated (and
    cached); and the calibration record for the manifest."""
    method = get_method(options.method)
    cache_path = options.cache_path(fp32_model.parent)
    key = cache_key(sha256_file(fp32_model), to_json(preprocess), method.name, method.settings,
                    [[f, d] for f, d in zip(calib.files, calib.digests, strict=True)], options.precision)
    tensors = options.tensors(onnx.load(str(fp32_model)))
    lookup = read_cache(cache_path, key, tensors)
    say(lookup.message)
    ranges = lookup.ranges
    if ranges is None:
        ranges = compute_ranges(fp32_model, calib, method, tensors, quiet=quiet, say=say)
        write_cache(cache_path, key, ranges)
    record = CalibrationRecord(
        dir=str(options.calib_dir), method=method.name, settings=method.settings, seed=options.seed,
        samples_requested=options.samples, samples=len(calib), skipped=len(calib.skipped), cache=str(cache_path),
        cache_reused=lookup.ranges is not None, targets=list(options.targets),
    )
    return ranges, record


def quantize(fp32_model: Path, ranges: Ranges, options: Int8Options, target: Target, *, fp16: bool) -> onnx.ModelProto:
    """The Q/DQ model for ``target``; with ``fp16`` its float parts and scales are fp16."""
    model = quantize_qdq(fp32_model, ranges, target)
    return convert_to_fp16(model) if fp16 else model
