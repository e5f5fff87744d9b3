"""Export: ONNX, simplification, FP16, TensorRT engines, parity against PyTorch, and the manifest."""

from .parity import THRESHOLDS, ParityReport, compare
from .pipeline import ONNX_NAMES, PRECISIONS, ExportResult, build_from_onnx, engine_name, export_model
from .tensorrt_build import BatchProfile, BuildOptions

__all__ = [
    "BatchProfile", "BuildOptions", "ExportResult", "ONNX_NAMES", "PRECISIONS", "ParityReport", "THRESHOLDS",
    "build_from_onnx", "compare", "engine_name", "export_model",
]
