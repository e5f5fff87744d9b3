"""The calibration cache: tensor ranges saved with everything they depend on.

A cache is valid only for the same float model (sha256), preprocessing, sample list (paths and content hashes)
and method settings, from the same version of the collector, and only if it holds every tensor the quantized forms
need; anything else is stale and is recalibrated, with a message saying why. A cache holds the ranges of one
precision (INT8 or FP8, each with its own methods and tensors): one made for another precision is refused, never
overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CalibrationError
from ..fileio import write_json_atomic
from .collector import VERSION as COLLECTOR_VERSION

CACHE_KIND = "smlp-deploy calibration cache"
CACHE_VERSION = 1
_WHAT = {"model_sha256": "the model", "preprocess": "the preprocessing", "method": "the calibration method",
         "settings": "the method's settings", "samples": "the calibration images"}


@dataclass(frozen=True)
class CacheLookup:
    ranges: dict[str, tuple[float, float]] | None  # None: calibrate
    message: str


def cache_key(model_sha256: str, preprocess: dict[str, Any], method: str, settings: dict[str, Any],
              samples: list[list[str]], precision: str = "int8") -> dict[str, Any]:
    """What the ranges depend on; ``samples`` are ``[relative path, sha256]`` pairs in calibration order."""
    return {"model_sha256": model_sha256, "preprocess": preprocess, "method": method, "settings": settings,
            "samples": samples, "precision": precision}


def read_cache(path: Path, key: dict[str, Any], tensors: Sequence[str]) -> CacheLookup:
    """The cached ranges if ``path`` holds a cache for ``key`` with a range for each of ``tensors``; otherwise
    why not. Never deletes anything."""
    data = check_cache_file(path, key["precision"])
    if data is None:
        return CacheLookup(None, f"no calibration cache at {path} yet: calibrating")
    if data.get("version") != CACHE_VERSION:
        return CacheLookup(None, f"calibration cache {path} has format version {data.get('version')}: recalibrating")
    if data.get("collector") != COLLECTOR_VERSION:
        made_by = (f"version {data['collector']} of the collector" if "collector" in data
                   else "onnxruntime's calibrators")
        return CacheLookup(None, f"calibration cache {path} was made by {made_by}, this is version "
                                 f"{COLLECTOR_VERSION}: recalibrating")
    changed = [what for field, what in _WHAT.items() if data["key"].get(field) != key[field]]
    if changed:
        return CacheLookup(None, f"calibration cache {path} is stale ({', '.join(changed)} changed): recalibrating")
    missing = [name for name in tensors if name not in data["ranges"]]
    if missing:
        return CacheLookup(None, f"calibration cache {path} lacks {len(missing)} of the {len(tensors)} tensors the "
                                 f"{key['precision'].upper()} targets quantize (e.g. {missing[0]!r}): recalibrating")
    ranges = {name: (float(lo), float(hi)) for name, (lo, hi) in data["ranges"].items()}
    return CacheLookup(ranges, f"reusing calibration cache {path} ({len(key['samples'])} images, {key['method']})")


def check_cache_file(path: Path, precision: str = "int8") -> dict[str, Any] | None:
    """The contents of the cache at ``path`` (None if there is none yet); a file that is not a calibration cache,
    or a cache of another precision than ``precision``, raises :class:`CalibrationError` and is never
    overwritten."""
    if not path.exists():
        return None
    try:
        data: object = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"calibration cache {str(path)!r} cannot be read as a calibration cache ({exc}); it "
                               "was left untouched: delete it or choose another path", parameter="cache") from exc
    if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
        raise CalibrationError(f"calibration cache {str(path)!r} is not an smlp-deploy calibration cache; it was left "
                               "untouched: delete it or choose another path", parameter="cache")
    made_for = _precision_of(data)
    if made_for != precision:
        raise CalibrationError(f"calibration cache {str(path)!r} holds {made_for.upper()} ranges, and "
                               f"{precision.upper()} calibrates its own (other tensors and methods); it was left "
                               f"untouched: give {precision.upper()} another cache path, or leave the path out for "
                               "its default", parameter="cache")
    return data


def _precision_of(data: dict[str, Any]) -> str:
    """The precision a cache was made for; caches from before FP8 hold INT8 ranges and do not say so."""
    key = data.get("key")
    return str(key.get("precision", "int8")) if isinstance(key, dict) else "int8"


def write_cache(path: Path, key: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> None:
    write_json_atomic(path, {"kind": CACHE_KIND, "version": CACHE_VERSION, "collector": COLLECTOR_VERSION,
                             "key": key, "ranges": {name: list(r) for name, r in ranges.items()}})
