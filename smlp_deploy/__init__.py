"""smlp-deploy: ship sMLPNet image classifiers to NVIDIA GPUs (ONNX, FP16/INT8 TensorRT engines, a runtime).

``import smlp_deploy`` is cheap: the names below load their modules on first use.
"""

import logging
from typing import TYPE_CHECKING

from ._lazy import attach

__version__ = "0.2.0"
__getattr__, __dir__, __all__ = attach(__name__, __file__)
# A library's log (TensorRT's messages, say) is the application's to show: without a handler of its own, Python
# would print every warning to stderr, in the middle of a command's progress.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .checkup import DoctorReport, doctor
    from .errors import SmlpDeployError
    from .runtime.classifier import Classifier, Prediction
