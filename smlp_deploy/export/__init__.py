"""Export: ONNX, simplification, FP16, INT8 and FP8, parity against PyTorch, the export job, and the engines of an
export (built with ``smlp_deploy.tensorrt``)."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from ..calibration.budget import AccuracyBudget  # what INT8/FP8 must keep: top-1 drop or agreement with FP32
    from ..calibration.options import (
        Fp8Options,  # FP8 calibration: images, method, cache
        Int8Options,  # INT8 calibration: images, method, cache, target forms
    )
    from ..manifest import (
        BatchProfile,  # an engine's min:opt:max batch
        ParityReport,  # an artifact's logits against PyTorch's: max|diff|, cosine, top-1 agreement
    )
    from ..tensorrt.builder import BuildOptions  # TensorRT's batch profile, workspace, optimization level
    from .engines import (
        build_from_onnx,  # the engines an earlier export planned, built here
        verify_engines,  # on a GPU: engines built elsewhere, checked and recorded
    )
    from .job import ExportResult  # the export folder and its manifest
    from .parity import (
        THRESHOLDS,  # each precision's parity floor
        compare,  # reference and artifact logits -> ParityReport
    )
    from .pipeline import export_model  # a variant -> model.onnx, .fp16, .int8, .fp8, engines, manifest.json
