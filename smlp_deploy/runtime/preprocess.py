"""Image decoding and preprocessing: the one implementation used by inference, calibration and parity checks.

On RGB PIL images the output equals torchvision's evaluation transform
``Resize(resize_size, BICUBIC, antialias=True) -> CenterCrop(input_size) -> ToTensor() -> Normalize(mean, std)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..preprocess_config import PreprocessConfig

ImageSource = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
# JPEG draft decoding (DCT scaling by 1/2, 1/4, 1/8) is used only while the decoded image keeps at least this
# many times the pixels the resize needs along the shorter side, so the bicubic antialiasing still does the
# real downscaling. The effect on the network input is measured in tests/test_preprocess.py.
DRAFT_OVERSAMPLING = 2


def load_image(source: ImageSource, *, name: str | None = None, min_side: int | None = None) -> Image.Image:
    """Decode ``source`` into an RGB PIL image with its EXIF orientation applied.

    ``min_side`` lets large JPEGs decode at a reduced scale (see ``DRAFT_OVERSAMPLING``). ``name`` is how errors
    refer to the image (defaults to the path, or the type of the object).
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else type(source).__name__)
    if isinstance(source, np.ndarray):
        return _from_array(source, label)
    if isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source, label)
    try:
        if min_side and image.format == "JPEG" and image is not source:
            image.draft("RGB", (min_side * DRAFT_OVERSAMPLING, min_side * DRAFT_OVERSAMPLING))
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image {label}: cannot be decoded ({exc})") from exc


def _open(source: str | Path | bytes | bytearray, label: str) -> Image.Image:
    try:
        if isinstance(source, (bytes, bytearray)):
            return Image.open(io.BytesIO(source))
        if not Path(source).is_file():
            raise ImageError(f"image {label}: no such file")
        return Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {label}: refused as a possible decompression bomb ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"image {label}: not a readable image ({exc})") from exc


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(
            f"image {label}: arrays must be uint8 HxWx3 RGB images (got dtype {array.dtype}, shape {array.shape}); "
            "preprocessed float batches must be shaped [N, 3, H, W]"
        )
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency is composited over white, high bit depths are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Map a single-channel integer or float image to 8 bits: floats up to 1 are taken as [0, 1], values up to
    255 as 8-bit, anything larger as 16-bit."""
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if is_float and peak <= 1.0:
        scale = 255.0
    elif peak <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


class Preprocessor:
    """Turns images into the normalized float32 batches the model takes, following a :class:`PreprocessConfig`."""

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self._resample = _RESAMPLE[config.interpolation]
        std = np.asarray(config.std, dtype=np.float32)
        # (x / 255 - mean) / std as one multiply-add per pixel.
        self._scale = (1.0 / (255.0 * std)).reshape(1, 1, 3)
        self._offset = (-np.asarray(config.mean, dtype=np.float32) / std).reshape(1, 1, 3)

    def load(self, source: ImageSource, name: str | None = None) -> Image.Image:
        return load_image(source, name=name, min_side=self.config.resize_size)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to ``resize_size`` (torchvision's rounding), then center crop."""
        short = self.config.resize_size
        w, h = image.size
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        if size != image.size:
            image = image.resize(size, self._resample)
        crop = self.config.input_size
        left = int(round((size[0] - crop) / 2.0))
        top = int(round((size[1] - crop) / 2.0))
        return image.crop((left, top, left + crop, top + crop))

    def to_array(self, image: Image.Image) -> np.ndarray:
        """RGB image of ``input_size`` -> normalized float32 array [3, H, W]."""
        pixels = np.asarray(image, dtype=np.float32)
        return np.ascontiguousarray((pixels * self._scale + self._offset).transpose(2, 0, 1))

    def __call__(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """One image (path, bytes, PIL image or uint8 HxWx3 array) -> float32 array [3, H, W]."""
        return self.to_array(self.resize_crop(self.load(source, name)))

    def batch(self, sources: list[ImageSource]) -> np.ndarray:
        """Several images -> float32 batch [N, 3, H, W]; errors name the image's index in the batch."""
        out = np.empty((len(sources), 3, self.config.input_size, self.config.input_size), dtype=np.float32)
        for i, source in enumerate(sources):
            label = f"#{i} ({source})" if isinstance(source, (str, Path)) else f"#{i}"
            out[i] = self(source, name=label)
        return out
