"""The INT8 step of an export: calibrate on the user's images (or reuse the cache), write Q/DQ models, verify."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..calibration import (
    DEFAULT_METHOD, DEFAULT_SAMPLES, TARGETS, CalibrationSet, cache_key, check_cache_file, compute_ranges, get_method,
    load_calibration_set, quantize_qdq, read_cache, write_cache,
)
from ..errors import CalibrationError
from ..fileio import sha256_file
from ..models.preprocess_config import PreprocessConfig
from ..progress import Steps

CACHE_NAME = "calibration.cache.json"


@dataclass(frozen=True)
class Int8Options:
    """``--int8`` settings: where the calibration images are and how they are used."""

    calib_dir: Path
    samples: int = DEFAULT_SAMPLES
    method: str = DEFAULT_METHOD
    cache: Path | None = None  # default: calibration.cache.json in the export directory
    targets: tuple[str, ...] = ("tensorrt",)
    seed: int = 0

    def check(self) -> None:
        """Fail before any work on settings that cannot work."""
        get_method(self.method)
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise CalibrationError(f"--int8-target must be among {', '.join(TARGETS)}, got {', '.join(self.targets)}")
        if not Path(self.calib_dir).is_dir():
            raise CalibrationError(f"--calib-dir {str(self.calib_dir)!r} is not a directory")
        if self.cache is not None:
            check_cache_file(Path(self.cache))


STEPS = 2  # calibration images, ranges; then quantize + verify per target


def read_calibration_images(options: Int8Options, preprocess: PreprocessConfig, steps: Steps) -> CalibrationSet:
    """The first INT8 step, run before anything is written, so a folder without usable images fails cleanly."""
    with steps.step(f"Reading calibration images from {options.calib_dir}"):
        calib = load_calibration_set(options.calib_dir, preprocess, samples=options.samples, seed=options.seed,
                                     quiet=steps.quiet)
        steps.say(f"{len(calib)} images, {len(calib.skipped)} unreadable skipped")
    return calib


def export_int8(
    fp32_model: Path,
    calib: CalibrationSet,
    preprocess: PreprocessConfig,
    options: Int8Options,
    *,
    fp16: bool,
    steps: Steps,
    verify: Callable[..., Any],
) -> dict[str, Any]:
    """Write one Q/DQ model per target beside ``fp32_model`` and ``verify(path, "int8", **extra)`` each.

    Returns the calibration record for the manifest.
    """
    method = get_method(options.method)
    cache_path = Path(options.cache or fp32_model.parent / CACHE_NAME)
    key = cache_key(sha256_file(fp32_model), preprocess.to_dict(), method.name, method.settings,
                    [[f, d] for f, d in zip(calib.files, calib.digests)])
    with steps.step(f"Calibrating activation ranges ({method.name}: {method.description})"):
        lookup = read_cache(cache_path, key)
        steps.say(lookup.message)
        ranges = lookup.ranges
        if ranges is None:
            ranges = compute_ranges(fp32_model, calib.inputs, method, quiet=steps.quiet)
            write_cache(cache_path, key, ranges)
    for name in options.targets:
        target = TARGETS[name]
        path = fp32_model.parent / target.onnx_name
        half = fp16 and target.fp16_float_parts
        with steps.step(f"Quantizing to {path.name} for {target.description}" + (", float parts fp16" if half else "")):
            quantize_qdq(fp32_model, path, ranges, method, target, fp16=half)
        verify(path, "int8", target=name, float_precision="fp16" if half else "fp32")
    return {
        "dir": str(options.calib_dir), "method": method.name, "settings": method.settings, "seed": options.seed,
        "samples_requested": options.samples, "samples": len(calib), "skipped": len(calib.skipped),
        "cache": str(cache_path), "cache_reused": lookup.ranges is not None, "targets": list(options.targets),
    }
