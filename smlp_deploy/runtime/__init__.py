"""Inference: preprocessing shared by every consumer, backends, and the Classifier that composes them."""

from .classifier import Classifier, Prediction
from .preprocess import Preprocessor, load_image

__all__ = ["Classifier", "Prediction", "Preprocessor", "load_image"]
