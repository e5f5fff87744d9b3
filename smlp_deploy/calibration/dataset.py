"""The calibration set: a deterministic sample of a user's image folder through the runtime's preprocessing."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, ImageError
from ..imagefolder import IMAGE_SUFFIXES, find_images
from ..preprocess_config import PreprocessConfig
from ..progress import progress_bar
from ..runtime.preprocess import Preprocessor

DEFAULT_SAMPLES = 256


@dataclass
class CalibrationSet:
    """Preprocessed images ``inputs`` [N, 3, H, W], the files they came from, and the files that were skipped."""

    root: Path
    inputs: np.ndarray
    files: list[str]  # relative to root, in the order of ``inputs``
    digests: list[str]  # sha256 of each file's bytes: the cache key sees content, not just names
    skipped: list[tuple[str, str]]  # (relative path, why)

    def __len__(self) -> int:
        return len(self.files)


def check_arguments(root: Path, samples: int) -> None:
    """Fail on a sample count or folder that cannot work, before anything else runs."""
    if samples < 1:
        raise CalibrationError(f"the number of calibration samples must be at least 1, got {samples}",
                               parameter="samples")
    if not root.is_dir():
        raise CalibrationError(f"calibration folder {str(root)!r} is not a directory", parameter="calib_dir")


def load_calibration_set(
    root: str | Path,
    preprocess: PreprocessConfig,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    quiet: bool = False,
) -> CalibrationSet:
    """Draw ``samples`` images from ``root`` (recursive) in an order fixed by ``seed`` and preprocess them.

    Unreadable files are skipped, counted and replaced by the next file in the drawn order. Fewer readable images
    than ``samples`` gives a warning and uses them all; none gives :class:`CalibrationError`.
    """
    root = Path(root)
    check_arguments(root, samples)
    candidates = find_images(root)
    if not candidates:
        raise CalibrationError(
            f"calibration folder {str(root)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}, searched "
            "recursively): calibrate on a folder of images like the ones the model will see", parameter="calib_dir"
        )
    order = np.random.default_rng(seed).permutation(len(candidates))
    preprocessor = Preprocessor(preprocess)
    size = preprocess.input_size
    inputs = np.empty((min(samples, len(candidates)), 3, size, size), dtype=np.float32)
    files, digests, skipped = [], [], []
    with progress_bar(total=len(inputs), desc="calibration images", unit="img", quiet=quiet) as bar:
        for index in order:
            if len(files) == len(inputs):
                break
            path = candidates[index]
            relative = path.relative_to(root).as_posix()
            try:
                data = path.read_bytes()
                inputs[len(files)] = preprocessor(data, name=relative)
            except (ImageError, OSError) as exc:
                skipped.append((relative, str(exc)))
                continue
            files.append(relative)
            digests.append(hashlib.sha256(data).hexdigest())
            bar.update()
    if not files:
        raise CalibrationError(
            f"none of the {len(candidates)} image files in {str(root)!r} could be read; first error: {skipped[0][1]}",
            parameter="calib_dir",
        )
    if skipped:
        warnings.warn(f"calibration: skipped {len(skipped)} unreadable file(s) in {root}, e.g. {skipped[0][1]}",
                      stacklevel=2)
    if len(files) < samples:
        warnings.warn(f"calibration: {root} has {len(files)} readable image(s), fewer than the {samples} asked "
                      f"for; calibrating on {len(files)}", stacklevel=2)
    return CalibrationSet(root, inputs[: len(files)], files, digests, skipped)
