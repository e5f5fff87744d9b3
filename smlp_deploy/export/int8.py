"""The calibrated steps of an export: read the calibration images, calibrate on them (or reuse the cache), then
write the INT8 Q/DQ form of each target. The options are ``calibration.options``'."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import onnx

from ..calibration.cache import cache_key, read_cache, write_cache
from ..calibration.dataset import CalibrationSet, load_calibration_set
from ..calibration.methods import Ranges, compute_ranges, get_method
from ..calibration.options import CalibrationOptions, Int8Options
from ..calibration.quantize import Target, quantize_qdq
from ..fileio import sha256_file
from ..manifest import CalibrationRecord
from ..preprocess_config import PreprocessConfig
from ..records import to_json
from .precision import convert_to_fp16


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


def quantize(fp32_model: Path, ranges: Ranges, options: Int8Options, target: Target, *, fp16: bool,
             keep_float: Collection[str] = ()) -> onnx.ModelProto:
    """The Q/DQ model for ``target``, the nodes in ``keep_float`` left in float; with ``fp16`` its float parts and
    scales are fp16."""
    model = quantize_qdq(fp32_model, ranges, target, keep_float=keep_float)
    return convert_to_fp16(model) if fp16 else model
