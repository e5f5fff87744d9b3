"""Inference: preprocessing shared by every consumer, backends, and the Classifier that composes them."""

from .preprocess import Preprocessor, load_image

__all__ = ["Preprocessor", "load_image"]
