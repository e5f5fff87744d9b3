"""Property-based: any value a caller can pass gets a prediction or a documented error, and any image of any
mode, size and shape preprocesses to the model's input."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smlp_deploy import Classifier, SmlpDeployError
from smlp_deploy.preprocess_config import PreprocessConfig
from smlp_deploy.runtime.preprocess import Preprocessor

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F", "LAB", "HSV"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def images(draw, max_side: int = 96) -> Image.Image:
    """A PIL image of any mode, with sides from 1 px, sometimes a strip thousands of pixels long."""
    mode = draw(st.sampled_from(MODES))
    if draw(st.booleans()):
        size = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    else:
        size = draw(st.sampled_from([(1, 3000), (3000, 1), (2, 2500), (1, 1)]))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if mode == "I;16":
        return Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257)
    return Image.fromarray(pixels, "RGB").convert(mode)


@st.composite
def encoded(draw) -> bytes:
    image = draw(images()).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, draw(st.sampled_from(["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])))
    data = buffer.getvalue()
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data  # sometimes truncated


def at_most_a_million(sides: list[int]) -> tuple[int, ...]:
    """A shape of up to 2**20 values: five sides of up to 70 are up to 1.7e9 of them, 13 GiB in float64, which made
    a worker of make test peak at 17 GB and take 196 s here (2026-12-01)."""
    return tuple(sides) if math.prod(sides) <= 1 << 20 else tuple(min(side, 16) for side in sides)


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int64, np.float16, np.float32, np.float64, np.bool_]))
    shape = draw(st.one_of(
        st.lists(st.integers(0, 70), min_size=0, max_size=5).map(at_most_a_million),
        st.sampled_from([(64, 64, 3), (3, 64, 64), (2, 3, 64, 64), (64, 64), (64, 64, 4), (0, 3, 64, 64)]),
    ))
    values = np.random.default_rng(draw(st.integers(0, 2**16))).normal(0, 3, shape)
    if draw(st.booleans()) and values.size:
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, 1e30]))
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype)


ANY_ONE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), st.binary(max_size=64),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), images(), encoded(), arrays(),
)
ANY = st.one_of(ANY_ONE, st.lists(ANY_ONE, max_size=4), st.tuples(ANY_ONE, ANY_ONE))


@pytest.fixture(scope="module")
def classifier(random_export):
    with Classifier(random_export / "model.onnx") as clf:
        yield clf


@SETTINGS
@given(value=ANY)
def test_any_value_gets_a_prediction_or_a_documented_error(classifier, value):
    try:
        result = classifier.predict(value, topk=3)
    except SmlpDeployError as exc:
        message = str(exc)
        assert message and " at 0x" not in message, message  # says what was wrong, without internal reprs
        return
    predictions = result if isinstance(result, list) else [result]
    for prediction in predictions:
        assert 0 <= prediction.index < 1000 and 0 <= prediction.score <= 1 and len(prediction.topk) == 3


@SETTINGS
@given(image=images(max_side=400))
def test_any_image_preprocesses_to_the_model_input(image):
    out = Preprocessor(PreprocessConfig.for_image_size(64))(image)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32 and np.isfinite(out).all()
