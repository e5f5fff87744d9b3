"""What can be benchmarked here: one Target per (backend, precision, artifact), or a reason it is skipped."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..artifacts import ARTIFACTS, ArtifactKind, onnx_artifact
from ..environment import tensorrt_unavailable_reason
from ..runtime.backends.base import Backend
from ..runtime.backends.factory import load_backend
from ..runtime.backends.torch_backend import TorchBackend
from .results import Skipped

BACKENDS = ("torch", "torch.compile", "onnxruntime", "tensorrt")


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
        if kind is None or kind.target != "tensorrt" or self.backend == "tensorrt":
            return None
        cpu_form = onnx_artifact(kind.precision, "cpu").file_name
        return (f"{kind.file_name} is the Q/DQ form TensorRT builds; ONNX Runtime runs it only to check it, slower "
                f"than FP32 by design. On CPUs time {cpu_form} (smlp-export --int8-target cpu or both)")


def resolve(
    backend: str, precision: str, *, model: torch.nn.Module, artifacts: Path, device: str, threads: int
) -> list[Target | Skipped]:
    """The targets ``backend`` x ``precision`` stands for on ``device``, or why there are none."""
    skip = lambda reason: [Skipped(backend, precision, reason)]  # noqa: E731
    if backend in ("torch", "torch.compile"):
        if precision == "int8":
            return skip("eager PyTorch has no INT8 path for sMLPNet; INT8 runs through onnxruntime or tensorrt")
        if precision == "fp16" and device != "cuda":
            return skip("fp16 PyTorch needs a CUDA GPU (CPU kernels for half precision are not a deployment path)")
        if backend == "torch.compile" and device != "cuda":
            return skip("torch.compile is benchmarked on GPUs (on CPUs it needs a C++ toolchain at run time)")
        dtype = torch.float16 if precision == "fp16" else torch.float32
        compile_ = backend == "torch.compile"
        return [Target(backend, precision, device, None, lambda: _torch_backend(model, device, dtype, compile_))]
    if backend == "onnxruntime":
        # The CPU form of INT8 is meant for ONNX Runtime's x86 kernels, so it is timed on CPUs only.
        kinds = [k for k in ARTIFACTS.values() if k.format == "onnx" and k.precision == precision
                 and (k.target != "cpu" or device == "cpu")]
    elif backend == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason:
            return skip(reason)
        kinds = [k for k in ARTIFACTS.values() if k.format == "tensorrt" and k.precision == precision]
        device = "cuda"
    else:
        raise ValueError(f"unknown backend {backend!r}")
    found = [k for k in kinds if (artifacts / k.file_name).is_file()]
    if not found:
        return skip(_missing(kinds[0], precision))
    return [Target(backend, precision, device, kind,
                   lambda kind=kind: load_backend(artifacts / kind.file_name, kind.backend, device=device,
                                                  threads=threads))
            for kind in found]


def _torch_backend(model, device, dtype, compile_) -> Backend:
    backend = TorchBackend(copy.deepcopy(model), device=device, dtype=dtype)  # .to() converts in place
    if compile_:
        backend.model = torch.compile(backend.model)  # default mode: max-autotune takes minutes per batch size
    return backend


def _missing(kind: ArtifactKind, precision: str) -> str:
    how = {"int8": "smlp-export --int8 --calib-dir DIR", "fp16": "smlp-export --fp16"}.get(precision, "smlp-export")
    return f"no {kind.file_name} among the artifacts (make it with {how}, then pass --artifacts DIR)"
