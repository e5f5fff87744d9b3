"""smlp-deploy: ship sMLPNet image classifiers to NVIDIA GPUs (ONNX, FP16/INT8/FP8 TensorRT engines, a runtime).

What a user calls, by task; ``import smlp_deploy`` is cheap: each name loads its module on first use.
"""

import logging
from typing import TYPE_CHECKING

from ._lazy import attach
from .version import __version__ as __version__

__getattr__, __dir__, __all__ = attach(__name__, __file__)
# A library's log (TensorRT's messages, say) is the application's to show: without a handler of its own, Python
# would print every warning to stderr, in the middle of a command's progress.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .batch.pipeline import predict_dataset  # images -> top-k rows in Parquet or JSON lines, on Ray, resumable
    from .bench.runner import (
        BenchConfig,  # what to time: backends, precisions, batch sizes, the export
        run_benchmark,  # the timed matrix, as a report smlp-bench prints, saves and plots
    )
    from .calibration.budget import AccuracyBudget  # what INT8/FP8 must keep: top-1 drop or agreement with FP32
    from .calibration.options import (
        Fp8Options,  # FP8 calibration: images, method, cache
        Int8Options,  # INT8 calibration: images, method, cache, target forms
    )
    from .checkup import doctor  # the report smlp-doctor prints
    from .errors import SmlpDeployError  # every error the toolkit raises: names the input and the fix
    from .export.engines import (
        build_from_onnx,  # the engines an earlier export planned, built here
        verify_engines,  # on a GPU: engines built elsewhere, checked and recorded
    )
    from .export.job import ExportResult  # the export folder and its manifest
    from .export.pipeline import export_model  # a variant -> model.onnx, .fp16, .int8, .fp8, engines, manifest.json
    from .manifest import Manifest  # what an export holds: every artifact, its parity, its engines
    from .models.registry import create_model  # a variant, random or from the authors' checkpoint
    from .runtime.backends.factory import load_backend  # one artifact file as a Backend, without preprocessing
    from .runtime.classifier import (
        Classifier,  # Classifier("engine.fp16.plan").predict(images)
        Prediction,  # one image's top-k labels and scores
    )
    from .serving.repository import write_triton_repository  # an export -> a Triton model repository
    from .tensorrt.builder import BuildOptions  # TensorRT's batch profile, workspace, optimization level
