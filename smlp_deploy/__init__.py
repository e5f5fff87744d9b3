"""smlp-deploy: ship sMLPNet image classifiers to NVIDIA GPUs (ONNX, FP16/INT8 TensorRT engines, a runtime)."""

from .errors import SmlpDeployError
from .runtime import Classifier, Prediction

__version__ = "0.1.0"
__all__ = ["Classifier", "Prediction", "SmlpDeployError", "__version__"]
