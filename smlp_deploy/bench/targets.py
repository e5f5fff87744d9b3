"""What can be benchmarked here: one Target per (backend, precision, artifact), or a reason it is skipped.

The backends are the runtime's registry (each with the artifacts of the formats it opens) plus eager PyTorch
and ``torch.compile``, which run the model itself as the baselines, and peers: libraries used as a user would use
them without this toolkit (``openvino-direct``). A precision is what a target computes in: an artifact's, or one
a backend computes in of its own (OpenVINO's bf16, on the FP32 file).
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import ARTIFACTS, MIN_COMPUTE_CAPABILITY, ONNX_KINDS, ArtifactKind, onnx_artifact, runs_precision
from ..artifacts import PRECISIONS as ARTIFACT_PRECISIONS
from ..environment import import_problem
from ..runtime.backends.base import Backend
from ..runtime.backends.factory import load_backend
from ..runtime.backends.registry import BACKENDS as RUNTIME_BACKENDS
from ..tensorrt.flavours import current_compute_capability
from .peers import OpenVINODirect
from .results import Skipped

if TYPE_CHECKING:
    import torch

MODEL_BACKENDS = ("torch", "torch.compile")  # run the PyTorch model itself, not an artifact
PEERS = (OpenVINODirect.name,)
BACKENDS = (*MODEL_BACKENDS, *PEERS, *(name for name in RUNTIME_BACKENDS if name not in MODEL_BACKENDS))
DEFAULT_BACKENDS = tuple(name for name in BACKENDS if name != "torch.compile" and name not in PEERS)
PRECISIONS = tuple(dict.fromkeys((*ARTIFACT_PRECISIONS, *(p for b in RUNTIME_BACKENDS.values() for p in b.precisions))))


@dataclass(frozen=True)
class Target:
    backend: str
    precision: str
    device: str
    artifact: ArtifactKind | None  # None for PyTorch
    load: Callable[[], Backend]

    @property
    def label(self) -> str:
        """As the table and the plot name the row: an artifact timed on a backend it is not meant for says so."""
        form = " (cpu form)" if self.artifact is not None and self.artifact.target == "cpu" else ""
        return f"{self.backend} {self.precision}{form}" + (" (TensorRT's form)" if self.note else "")

    @property
    def note(self) -> str | None:
        """Why this row's figure is not the artifact's speed, where the artifact is meant for another backend."""
        kind = self.artifact
        if kind is None or kind.target != "tensorrt" or kind.is_engine:
            return None
        cpu_form = next((k.file_name for k in ONNX_KINDS if k.precision == kind.precision and k.target == "cpu"), None)
        where = (f"On CPUs time {cpu_form} (smlp-export --int8-target cpu or both)" if cpu_form else
                 f"{kind.precision.upper()} is for GPUs (engines)")
        return (f"{kind.file_name} is the Q/DQ form TensorRT builds; ONNX Runtime runs it only to check it, slower "
                f"than FP32 by design. {where}")


def resolve(
    backend: str, precision: str, *, model: torch.nn.Module, artifacts: Path, device: str, threads: int
) -> list[Target | Skipped]:
    """The targets ``backend`` x ``precision`` stands for on ``device``, or why there are none."""

    def skip(reason: str) -> list[Target | Skipped]:
        return [Skipped(backend, precision, reason)]

    if backend in MODEL_BACKENDS:
        if precision in ("int8", "fp8"):
            return skip(f"eager PyTorch has no {precision.upper()} path for sMLPNet; {precision.upper()} runs through "
                        "ONNX Runtime or TensorRT")
        if precision == "fp16" and device != "cuda":
            return skip("fp16 PyTorch needs a CUDA GPU (CPU kernels for half precision are not a deployment path)")
        if backend == "torch.compile" and device != "cuda" and not _cpp_compiler():
            return skip("torch.compile on CPUs needs a C++ compiler at run time (g++ or clang++, or CXX)")
        compile_ = backend == "torch.compile"
        return [Target(backend, precision, device, None, partial(_torch_backend, model, device, precision, compile_))]
    if backend in PEERS:
        return _openvino_direct(precision, artifacts, device)
    info = RUNTIME_BACKENDS[backend]
    reason = info.unavailable()
    if reason:
        return skip(reason)
    device = device if device in info.devices else info.devices[0]
    if device == "cuda" and precision in MIN_COMPUTE_CAPABILITY and not runs_precision(
            capability := current_compute_capability(), precision):
        return skip(f"this GPU (compute capability {capability}) has no {precision.upper()}; it needs "
                    f"{'.'.join(map(str, MIN_COMPUTE_CAPABILITY[precision]))} or later")
    computes = precision in info.precisions  # a precision of the backend's own: it runs the FP32 file in it
    if precision not in ARTIFACT_PRECISIONS and not computes:
        others = [b.name for b in RUNTIME_BACKENDS.values() if precision in b.precisions]
        return skip(f"{backend} does not compute in {precision}" + (f"; {', '.join(others)} does" if others else ""))
    # The CPU form of INT8 is meant for x86 kernels, so it is timed on CPUs only.
    kinds = [k for k in ARTIFACTS.values() if k.format in info.formats and (k.target != "cpu" or device == "cpu")
             and k.precision == (precision if precision in ARTIFACT_PRECISIONS else "fp32")]
    if not kinds:
        return skip(f"{backend} runs no {precision} artifact")
    found = [k for k in kinds if (artifacts / k.file_name).is_file()]
    if not found:
        return skip(_missing(kinds[0], precision))
    load = partial(load_backend, backend=backend, device=device, threads=threads if "threads" in info.options else None,
                   precision=precision if computes else None)
    return [Target(backend, precision, device, kind, partial(load, artifacts / kind.file_name)) for kind in found]


def _openvino_direct(precision: str, artifacts: Path, device: str) -> list[Target | Skipped]:
    """The peer of the openvino backend: the same files, OpenVINO called directly with its own settings."""

    def skip(reason: str) -> list[Target | Skipped]:
        return [Skipped(OpenVINODirect.name, precision, reason)]

    problem = import_problem("openvino")
    if problem:
        return skip(f"cannot import {problem}: pip install 'smlp-deploy[openvino]'")
    if device != "cpu":
        return skip("OpenVINO is timed on CPUs")
    if precision not in OpenVINODirect.HINTS:
        return skip(f"{OpenVINODirect.name} runs {', '.join(OpenVINODirect.HINTS)}")
    kind = onnx_artifact("int8", "cpu") if precision == "int8" else onnx_artifact("fp32")
    if not (artifacts / kind.file_name).is_file():
        return skip(_missing(kind, precision))
    return [Target(OpenVINODirect.name, precision, device, kind,
                   partial(OpenVINODirect, artifacts / kind.file_name, precision))]


def _cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU code generation would use (inductor takes $CXX, else g++)."""
    return shutil.which(os.environ.get("CXX") or "g++") or shutil.which("clang++")


def _torch_backend(model: torch.nn.Module, device: str, precision: str, compile_: bool) -> Backend:
    import torch

    from ..runtime.backends.torch_backend import TorchBackend

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    backend = TorchBackend(copy.deepcopy(model), device=device, dtype=dtype)  # .to() converts in place
    if compile_:
        backend.model = torch.compile(backend.model)  # default mode: max-autotune takes minutes per batch size
    return backend


def _missing(kind: ArtifactKind, precision: str) -> str:
    how = {"int8": "smlp-export --int8 --calib-dir DIR", "fp8": "smlp-export --fp8 --calib-dir DIR",
           "fp16": "smlp-export --fp16"}.get(precision, "smlp-export")
    return f"no {kind.file_name} among the artifacts (make it with {how}, then pass --artifacts DIR)"
