"""Inference: preprocessing shared by every consumer, backends, and the Classifier that composes them."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .backends.factory import load_backend
    from .classifier import Classifier, Prediction
    from .preprocess import Preprocessor, load_image
