"""Image decoding and preprocessing: the one implementation used by inference, calibration and parity checks.

On RGB PIL images the output equals torchvision's evaluation transform
``Resize(resize_size, BICUBIC, antialias=True) -> CenterCrop(input_size) -> ToTensor() -> Normalize(mean, std)``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..preprocess_config import PreprocessConfig

ImageSource = str | Path | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
SOURCES_ACCEPTED = ("a path, encoded bytes, a binary file object, a PIL image, or a uint8 array (HxW, HxWx1, "
                    "HxWx3 RGB, HxWx4 RGBA)")

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
# JPEG draft decoding (DCT scaling by 1/2, 1/4, 1/8), when asked for (``jpeg_draft``), is used only while the decoded
# image keeps at least this many times the pixels the resize needs along the shorter side, so the bicubic
# antialiasing still does the real downscaling. The effect on the network input is measured in
# tests/test_preprocess.py, the time it saves in docs/benchmarks/jpeg_draft.py.
DRAFT_OVERSAMPLING = 2


def load_image(source: ImageSource, *, name: str | None = None, min_side: int | None = None) -> Image.Image:
    """Decode ``source`` into an RGB PIL image with its EXIF orientation applied.

    ``min_side`` lets large JPEGs decode at a reduced scale (see ``DRAFT_OVERSAMPLING``). ``name`` is how errors
    refer to the image (defaults to the path, or the type of the object; never the object's repr).
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else type(source).__name__)
    if isinstance(source, np.ndarray):
        return _from_array(source, label)
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (str, Path, bytes, bytearray, memoryview)) or hasattr(source, "read"):
        image = _open(source, label)
    else:
        what = f"image {name}" if name else "the image"
        raise ImageError(f"{what} is a {type(source).__name__}, not an image; pass {SOURCES_ACCEPTED}")
    if image.width < 1 or image.height < 1:
        raise ImageError(f"image {label}: has no pixels ({image.width}x{image.height})")
    try:
        if min_side and image.format == "JPEG" and image is not source:
            image.draft("RGB", (min_side * DRAFT_OVERSAMPLING, min_side * DRAFT_OVERSAMPLING))
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image {label}: cannot be decoded ({_reason(exc)})") from exc


def _open(source: str | Path | bytes | bytearray | memoryview | BinaryIO, label: str) -> Image.Image:
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageError(f"image {label}: {'a folder, not an image' if Path(source).is_dir() else 'no such file'}")
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(source))
        return Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {label}: refused as a possible decompression bomb ({_reason(exc)})") from exc
    except UnidentifiedImageError:
        raise ImageError(f"image {label}: not a readable image (no image format Pillow reads)") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"image {label}: not a readable image ({_reason(exc)})") from exc


_ARRAY_MODES = {2: "L", 3: "RGB", 4: "RGBA"}  # by channel count (2: a plain HxW array)


def _reason(exc: BaseException) -> str:
    """Pillow's message without the reprs it embeds (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(exc)) or type(exc).__name__


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    channels = 2 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if array.ndim == 3 and channels == 1:
        array, channels = array[:, :, 0], 2
    if array.dtype != np.uint8 or channels not in _ARRAY_MODES or array.size == 0:
        raise ImageError(
            f"image {label}: arrays must be uint8 images, HxW, HxWx1, HxWx3 or HxWx4, with pixels (got dtype "
            f"{array.dtype}, shape {list(array.shape)}); preprocessed batches are float32 [N, 3, H, W]"
        )
    return to_rgb(Image.fromarray(np.ascontiguousarray(array), _ARRAY_MODES[channels]))


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
    """Turns images into the normalized float32 batches the model takes, following a :class:`PreprocessConfig`.

    A photo gives the same array whether it comes as a path, bytes or a decoded PIL image. ``jpeg_draft`` trades
    that for speed: large JPEGs given encoded are decoded at a reduced scale (docs/runtime.md, "Decoding"), so
    their arrays differ slightly from a full decode's."""

    def __init__(self, config: PreprocessConfig, *, jpeg_draft: bool = False):
        self.config = config
        self.jpeg_draft = jpeg_draft
        self._resample = _RESAMPLE[config.interpolation]
        std = np.asarray(config.std, dtype=np.float32)
        # (x / 255 - mean) / std as one multiply-add per pixel.
        self._scale = (1.0 / (255.0 * std)).reshape(1, 1, 3)
        self._offset = (-np.asarray(config.mean, dtype=np.float32) / std).reshape(1, 1, 3)

    def load(self, source: ImageSource, name: str | None = None) -> Image.Image:
        return load_image(source, name=name, min_side=self.config.resize_size if self.jpeg_draft else None)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to ``resize_size`` (torchvision's rounding), then center crop.

        Only the region the crop keeps is resampled (Pillow's ``box``), with the same pixel mapping and filter
        support as resizing the whole image, so cost and memory follow the output size whatever the aspect
        ratio: a 1x10000 image is not first scaled to 256x2,560,000.
        """
        short = self.config.resize_size
        w, h = image.size
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        crop = self.config.input_size
        left = round((size[0] - crop) / 2.0)
        top = round((size[1] - crop) / 2.0)
        if size == image.size:
            return image.crop((left, top, left + crop, top + crop))
        sx, sy = w / size[0], h / size[1]
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        return image.resize((crop, crop), self._resample, box=box)

    def to_array(self, image: Image.Image) -> np.ndarray:
        """RGB image of ``input_size`` -> normalized float32 array [3, H, W]."""
        pixels = np.asarray(image, dtype=np.float32)
        return np.ascontiguousarray((pixels * self._scale + self._offset).transpose(2, 0, 1))

    def __call__(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """One image (path, bytes, file object, PIL image or uint8 array) -> float32 array [3, H, W]."""
        return self.to_array(self.resize_crop(self.load(source, name)))

    def batch(self, sources: Sequence[ImageSource]) -> np.ndarray:
        """Several images -> float32 batch [N, 3, H, W]; errors name the image's index in the batch."""
        out = np.empty((len(sources), 3, self.config.input_size, self.config.input_size), dtype=np.float32)
        for i, source in enumerate(sources):
            label = f"#{i} ({source})" if isinstance(source, (str, Path)) else f"#{i}"
            out[i] = self(source, name=label)
        return out
