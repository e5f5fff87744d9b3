from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from smlp_deploy.errors import ImageError, SmlpDeployError
from smlp_deploy.models import PreprocessConfig
from smlp_deploy.runtime.preprocess import Preprocessor, load_image, to_rgb

from .conftest import SKIMAGE_DATA

CONFIG = PreprocessConfig()
MEAN, STD = np.array(CONFIG.mean, np.float32), np.array(CONFIG.std, np.float32)


def torchvision_eval(image: Image.Image, resize: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """torchvision's Resize(256, BICUBIC) -> CenterCrop(224) -> ToTensor -> Normalize, with the sizes its
    rules give worked out by hand: the long side is int(256 * long / short); offsets are int(round(excess / 2))."""
    crop = image.resize(resize, Image.Resampling.BICUBIC).crop(box)
    pixels = np.asarray(crop, np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


@pytest.mark.parametrize(
    "size, resize, box",
    [
        ((500, 375), (341, 256), (58, 16, 282, 240)),  # landscape; round(58.5) == 58
        ((375, 500), (256, 341), (16, 58, 240, 282)),  # portrait
        ((451, 300), (384, 256), (80, 16, 304, 240)),  # int() truncates 384.85
        ((256, 256), (256, 256), (16, 16, 240, 240)),  # no resize needed
    ],
)
def test_equals_torchvision_eval_transform(size, resize, box):
    """Same geometry as torchvision. Only the crop's region is resampled (Pillow's ``box``), whose filter
    coefficients differ from a whole-image resize in the last bits, so a rare value lands one 8-bit level away
    (on the 5 bundled photos: 24 of 752,640 values); a misplaced pixel would move hundreds of values by more."""
    photo = Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB").resize(size)
    ours, theirs = Preprocessor(CONFIG)(photo), torchvision_eval(photo, resize, box)
    one_level = 1 / (255 * STD.min()) + 1e-6
    assert np.abs(ours - theirs).max() <= one_level and np.mean(np.abs(ours - theirs) > 1e-6) < 1e-3


def test_output_shape_dtype_and_batch(photos):
    batch = Preprocessor(CONFIG).batch(photos)
    assert batch.shape == (len(photos), 3, 224, 224) and batch.dtype == np.float32
    assert -2.2 < batch.min() < -1.5 and 2.0 < batch.max() < 2.7  # ImageNet-normalized range of real photos


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (300, 200), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (200, 300)


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("L", (4, 4), 128), (128, 128, 128)),
        (Image.new("LA", (4, 4), (10, 0)), (255, 255, 255)),  # fully transparent -> white background
        (Image.new("RGBA", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("RGBA", (4, 4), (200, 100, 50, 255)), (200, 100, 50)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.fromarray(np.full((4, 4), 65535, np.uint16)), (255, 255, 255)),  # I;16 scaled by 1/257
        (Image.fromarray(np.full((4, 4), 1000, np.int32)), (4, 4, 4)),  # I with values > 255: taken as 16-bit
        (Image.fromarray(np.full((4, 4), 0.5, np.float32)), (128, 128, 128)),  # F in [0, 1]
    ],
    ids=["L", "LA", "RGBA-clear", "RGBA-opaque", "CMYK", "I;16", "I", "F"],
)
def test_every_mode_becomes_rgb(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == expected


def test_palette_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_large_jpeg_draft_decoding_stays_within_tolerance():
    """Decoding at 1/2 scale (retina.jpg is 1411 px) moves the network input by < 0.02 on average (normalized
    units, about 1/255 of the pixel range): the tolerance the draft rule is held to."""
    path = SKIMAGE_DATA / "retina.jpg"
    drafted = Preprocessor(CONFIG, jpeg_draft=True)(path)
    preprocess = Preprocessor(CONFIG)
    full = preprocess.to_array(preprocess.resize_crop(to_rgb(Image.open(path))))
    assert 0 < np.abs(drafted - full).mean() < 0.02
    assert np.array_equal(preprocess(path), full)  # without it, a path decodes as the caller's own decode does


@pytest.mark.parametrize(
    "source, message",
    [
        ("/no/such/image.jpg", "^image /no/such/image.jpg: no such file$"),
        (b"not an image", "image bytes: not a readable image"),
        (np.zeros((4, 4, 3), np.float32), r"arrays must be uint8 images.*got dtype float32, shape \[4, 4, 3\]"),
        (np.zeros((0, 4, 3), np.uint8), r"arrays must be uint8 images.*with pixels"),
        (None, "the image is a NoneType, not an image; pass a path"),
        (3.5, "the image is a float, not an image"),
    ],
)
def test_bad_images_name_themselves(source, message):
    with pytest.raises(ImageError, match=message) as info:
        load_image(source)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SmlpDeployError)


def test_a_bad_file_is_named_once(tmp_path):
    """The path leads the message; the reason after it does not repeat it (Pillow's own messages do)."""
    (tmp_path / "notes.jpg").write_text("shopping list")
    for path, reason in ((tmp_path / "notes.jpg", "not a readable image"), (tmp_path, "a folder, not an image")):
        with pytest.raises(ImageError, match=reason) as info:
            load_image(path)
        assert str(info.value).count(str(path)) == 1, str(info.value)


def test_truncated_jpeg_and_decompression_bomb(monkeypatch):
    buffer = io.BytesIO()
    Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB").save(buffer, "JPEG")
    with pytest.raises(ImageError, match="cannot be decoded"):
        Preprocessor(CONFIG)(buffer.getvalue()[:2000], name="cut.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(buffer.getvalue())
