"""Backends behind one interface; each backend's library is imported only when a file is opened with it."""

from typing import TYPE_CHECKING

from ..._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .base import Backend
    from .factory import load_backend
    from .onnxruntime_backend import OnnxRuntimeBackend
    from .openvino_backend import OpenVINOBackend
    from .registry import BACKENDS, BackendInfo, LoadOptions
    from .tensorrt_backend import TensorRTBackend
    from .torch_backend import TorchBackend
