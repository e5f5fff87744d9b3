"""The Python-backend models a repository's ``model.py`` files name: they run inside Triton's Python stub.

``ClassifierModel`` serves an artifact through :class:`~smlp_deploy.Classifier` (for servers without the
TensorRT or ONNX Runtime backend, such as the one in nvidia-pytriton's wheel), each instance on the device Triton
gives it (``KIND_GPU`` instance N: ``cuda:N``, or a load error saying why it cannot run there; ``KIND_CPU``: the
CPU), never on another without a word; ``PreprocessModel`` turns encoded
image bytes into the model's input with the project's own preprocessing, as the first step of the image
ensemble. Both find their files in their version folder (``args["model_repository"]/<version>/``): the artifact
and the export's manifest, which gives the preprocessing and is checked against the artifact's sha256.

Tensors cross the stub by DLPack both ways (``np.from_dlpack`` / ``pb_utils.Tensor.from_dlpack``): the stub of
Triton 2.51 (nvidia-pytriton 0.7.0) was built with a pybind11 that misreads numpy 2 arrays, so ``as_numpy()``
returns wrong values and ``pb_utils.Tensor(name, array)`` sends no bytes, while DLPack is exact under numpy 1
and 2. For the same reason encoded images come as UINT8 [-1] tensors, not BYTES: that stub cannot read BYTES
inputs under numpy 2 (it crashes). ``triton_python_backend_utils`` exists only inside the stub, so it is
imported where it is used.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import INPUT_NAME, OUTPUT_NAME
from ..errors import InputError, ScoreError, SmlpDeployError
from ..manifest import MANIFEST_NAME, Manifest
from ..runtime.classifier import Classifier
from ..runtime.preprocess import Preprocessor

IMAGE_INPUT = "image"  # UINT8 [-1]: one encoded image (JPEG, PNG, ...) per row
ARTIFACT_PARAMETER = "artifact"  # config parameter: the artifact's file name in the version folder
BACKEND_PARAMETER = "backend"  # config parameter (optional): the toolkit backend that opens it
PRECISION_PARAMETER = "precision"  # config parameter (optional): the precision that backend computes in


class ClassifierModel:
    """``input`` FP32 [3, H, W] -> ``logits`` [classes], every request of a batch in one Classifier call."""

    def initialize(self, args: dict[str, str]) -> None:
        _quiet_dlpack_capsule_warning()
        parameters = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        artifact = _version_dir(args) / parameters[ARTIFACT_PARAMETER]
        self.classifier = Classifier(artifact, backend=parameters.get(BACKEND_PARAMETER),
                                     precision=parameters.get(PRECISION_PARAMETER), device=instance_device(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [_input(request, INPUT_NAME) for request in requests]
        try:
            logits = self.classifier.logits(np.concatenate(batches))
            results: Sequence[np.ndarray | Exception] = np.split(logits, np.cumsum([len(b) for b in batches])[:-1])
        except (InputError, ScoreError):  # rare (NaN in a request, or in its scores): each request on its own
            results = [_attempt(self.classifier.logits, batch) for batch in batches]
        return [_response(OUTPUT_NAME, result) for result in results]

    def finalize(self) -> None:
        self.classifier.close()
        _restore_unraisable_hook()


class PreprocessModel:
    """``image`` UINT8 [-1] (encoded bytes) -> ``input`` FP32 [3, H, W]; an undecodable image fails its request
    only."""

    def initialize(self, args: dict[str, str]) -> None:
        _quiet_dlpack_capsule_warning()
        self.preprocess = Preprocessor(Manifest.load(_version_dir(args) / MANIFEST_NAME).preprocess)

    def execute(self, requests: list[Any]) -> list[Any]:
        return [_response(INPUT_NAME, _attempt(self._images, _input(request, IMAGE_INPUT))) for request in requests]

    def _images(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.preprocess(row.tobytes(), name=f"#{i} of the request") for i, row in enumerate(rows)])

    def finalize(self) -> None:
        _restore_unraisable_hook()


def instance_device(args: dict[str, str]) -> str | None:
    """The device of the instance Triton is loading: ``cuda:N`` for a ``KIND_GPU`` instance on GPU N, ``cpu`` for a
    ``KIND_CPU`` one, the backend's own choice for ``KIND_MODEL``. Without it ONNX Runtime would take the CPU for a
    GPU instance where it offers no CUDA, and every engine instance of a multi-GPU server would land on GPU 0."""
    kind = args.get("model_instance_kind", "MODEL")
    if kind == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id', '0'))}"
    return "cpu" if kind == "CPU" else None


def _version_dir(args: dict[str, str]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def _input(request: Any, name: str) -> np.ndarray:
    import triton_python_backend_utils as pb_utils

    return np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))


def _attempt(step: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray | SmlpDeployError:
    try:
        return step(batch)
    except (InputError, ScoreError) as exc:
        return exc


def _response(name: str, result: np.ndarray | Exception) -> Any:
    import triton_python_backend_utils as pb_utils

    if isinstance(result, Exception):  # an InputError is the request's fault (HTTP 400); non-finite scores are not
        code = pb_utils.TritonError.INVALID_ARG if isinstance(result, InputError) else pb_utils.TritonError.INTERNAL
        error = pb_utils.TritonError(str(result), code)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)
    tensor = pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(result, dtype=np.float32))
    return pb_utils.InferenceResponse(output_tensors=[tensor])


# The 2.51 stub renames the DLPack capsules it consumes to "used_dlpack" (the standard says "used_dltensor"), so
# numpy's capsule destructor reports "PyCapsule_GetPointer called with incorrect name" once per output tensor
# (the stub frees the tensor itself; outputs are exact). The stub process runs this model alone, so the model
# filters that one report and passes every other to the hook it found, which finalize() puts back.
class _CapsuleReportFilter:
    """``sys.unraisablehook`` while the model is loaded: drops the capsule report, passes the others on."""

    def __init__(self, previous: Callable[[sys.UnraisableHookArgs], object]) -> None:
        self.previous = previous

    def __call__(self, report: sys.UnraisableHookArgs) -> None:
        if not (report.exc_type is ValueError and "PyCapsule_GetPointer" in str(report.exc_value)):
            self.previous(report)


def _quiet_dlpack_capsule_warning() -> None:
    if not isinstance(sys.unraisablehook, _CapsuleReportFilter):
        sys.unraisablehook = _CapsuleReportFilter(sys.unraisablehook)


def _restore_unraisable_hook() -> None:
    if isinstance(sys.unraisablehook, _CapsuleReportFilter):
        sys.unraisablehook = sys.unraisablehook.previous
