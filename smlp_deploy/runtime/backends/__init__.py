"""Backends behind one interface; TensorRT is imported only when an engine is loaded."""

from .base import Backend
from .onnxruntime_backend import OnnxRuntimeBackend
from .torch_backend import TorchBackend

__all__ = ["Backend", "OnnxRuntimeBackend", "TorchBackend"]
