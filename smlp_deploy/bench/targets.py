"""What can be benchmarked here: one Target per (backend, precision, artifact), or a reason it is skipped."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..export.pipeline import ONNX_NAMES, engine_name
from ..export.tensorrt_build import tensorrt_unavailable_reason
from ..runtime.backends import Backend, TorchBackend
from ..runtime.classifier import load_backend

BACKENDS = ("torch", "torch.compile", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# The INT8 model ONNX Runtime's x86 kernels run fastest (smlp-export --int8-target cpu), benchmarked beside
# the TensorRT form when the export has it.
ONNX_INT8_CPU = "model.int8.cpu.onnx"


@dataclass(frozen=True)
class Target:
    backend: str
    precision: str
    device: str
    artifact: str | None  # file name in the artifacts directory; None for PyTorch
    load: Callable[[], Backend]

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}" + (" (cpu form)" if self.artifact == ONNX_INT8_CPU else "")


@dataclass(frozen=True)
class Skipped:
    backend: str
    precision: str
    reason: str


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
        return [Target(backend, precision, device, None,
                       lambda: _torch_backend(model, device, dtype, threads, compile_))]
    if backend == "onnxruntime":
        names = [ONNX_NAMES[precision]] + ([ONNX_INT8_CPU] if precision == "int8" and device == "cpu" else [])
        found = [n for n in names if (artifacts / n).is_file()]
        if not found:
            return skip(_missing(artifacts / names[0], precision))
        return [Target(backend, precision, device, n,
                       lambda n=n: load_backend(backend, artifacts / n, device=device, threads=threads)) for n in found]
    if backend == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason:
            return skip(reason)
        engine = artifacts / engine_name(precision)
        if not engine.is_file():
            return skip(_missing(engine, precision))
        return [Target(backend, precision, "cuda", engine.name, lambda: load_backend(backend, engine))]
    raise ValueError(f"unknown backend {backend!r}")


def _torch_backend(model, device, dtype, threads, compile_) -> Backend:
    torch.set_num_threads(threads)
    backend = TorchBackend(copy.deepcopy(model), device=device, dtype=dtype)  # .to() converts in place
    if compile_:
        backend.model = torch.compile(backend.model)  # default mode: max-autotune takes minutes per batch size
    return backend


def _missing(path: Path, precision: str) -> str:
    how = {"int8": "smlp-export --int8 --calib-dir DIR", "fp16": "smlp-export --fp16"}.get(precision, "smlp-export")
    return f"no {path.name} among the artifacts (make it with {how}, then pass --artifacts DIR)"
