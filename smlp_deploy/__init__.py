"""smlp-deploy: ship sMLPNet image classifiers to NVIDIA GPUs (ONNX, FP16/INT8 TensorRT engines, a runtime).

``import smlp_deploy`` is cheap: the names below load their modules on first use.
"""

from typing import TYPE_CHECKING

from ._lazy import attach

__version__ = "0.2.0"
__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .checkup import DoctorReport, doctor
    from .errors import SmlpDeployError
    from .runtime.classifier import Classifier, Prediction
