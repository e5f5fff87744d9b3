"""Export: ONNX, simplification, FP16, INT8, TensorRT engines, parity against PyTorch, and the export job."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from ..manifest import BatchProfile, ParityReport
    from .fp8 import Fp8Options
    from .int8 import Int8Options
    from .parity import THRESHOLDS, compare
    from .pipeline import ExportResult, build_from_onnx, export_model
    from .tensorrt_build import BuildOptions
