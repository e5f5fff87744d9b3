"""The calibration set: a deterministic sample of a user's image folder through the runtime's preprocessing.

The set holds the sample list, not the pixels: images are decoded once to check they can be read, and again,
a batch at a time, while calibrating, so memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, ImageError
from ..imagefolder import find_images, holds_no_images, not_a_folder
from ..preprocess_config import PreprocessConfig
from ..progress import progress_bar
from ..runtime.preprocess import Preprocessor

DEFAULT_SAMPLES = 256


@dataclass
class CalibrationSet:
    """The readable images drawn from ``root``, in calibration order, and the files that were skipped."""

    root: Path
    preprocess: PreprocessConfig
    files: list[str]  # relative to root
    digests: list[str]  # sha256 of each file's bytes: the cache key sees content, not just names
    skipped: list[tuple[str, str]]  # (relative path, why)
    requested: int  # the number of images asked for: more than ``len(self)`` when the folder holds fewer

    def __len__(self) -> int:
        return len(self.files)

    def images(self) -> Iterator[np.ndarray]:
        """The images [3, H, W], preprocessed one at a time, in calibration order. A file that changed or went
        away since the set was drawn raises :class:`CalibrationError` (the cache key holds its old hash)."""
        preprocessor = Preprocessor(self.preprocess)
        for relative, digest in zip(self.files, self.digests, strict=True):
            yield self._read(preprocessor, relative, digest)

    def _read(self, preprocessor: Preprocessor, relative: str, digest: str) -> np.ndarray:
        try:
            data = (self.root / relative).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise CalibrationError(f"calibration image {relative!r} in {str(self.root)!r} changed since "
                                       "the calibration set was drawn: calibrate again", parameter="calib_dir")
            return preprocessor(data, name=relative)
        except (ImageError, OSError) as exc:
            raise CalibrationError(f"calibration image {relative!r} in {str(self.root)!r} can no longer be read "
                                   f"({exc}): calibrate again", parameter="calib_dir") from exc


def check_arguments(root: Path, samples: int) -> None:
    """Fail on a sample count or folder that cannot work, before anything else runs."""
    if samples < 1:
        raise CalibrationError(f"the number of calibration samples must be at least 1, got {samples}",
                               parameter="samples")
    if problem := not_a_folder(root):
        raise CalibrationError(f"calibration folder {str(root)!r} {problem}", parameter="calib_dir")


def load_calibration_set(
    root: str | Path,
    preprocess: PreprocessConfig,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    quiet: bool = False,
) -> CalibrationSet:
    """Draw ``samples`` images from ``root`` (recursive) in an order fixed by ``seed``; each is read through the
    preprocessing once, to know it can be, and let go.

    Unreadable files are skipped, counted and replaced by the next file in the drawn order. Fewer readable images
    than ``samples`` are all used (calibrating on them warns, reusing a cache for them does not); none gives
    :class:`CalibrationError`.
    """
    root = Path(root)
    check_arguments(root, samples)
    candidates = find_images(root)
    if not candidates:
        raise CalibrationError(f"{holds_no_images(root, 'calibration folder')}: calibrate on a folder of images like "
                               "the ones the model will see", parameter="calib_dir")
    order = np.random.default_rng(seed).permutation(len(candidates))
    preprocessor = Preprocessor(preprocess)
    wanted = min(samples, len(candidates))
    files: list[str] = []
    digests: list[str] = []
    skipped: list[tuple[str, str]] = []
    with progress_bar(total=wanted, desc="calibration images", unit="img", quiet=quiet) as bar:
        for index in order:
            if len(files) == wanted:
                break
            path = candidates[index]
            relative = path.relative_to(root).as_posix()
            try:
                data = path.read_bytes()
                preprocessor(data, name=relative)
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
    return CalibrationSet(root, preprocess, files, digests, skipped, samples)
