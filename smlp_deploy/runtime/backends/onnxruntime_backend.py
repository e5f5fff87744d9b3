"""ONNX Runtime: the CUDA execution provider where onnxruntime-gpu and a GPU are present, else the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import Arg, ArtifactError, BackendUnavailableError
from ...filekind import file_kind
from .base import Backend


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.log_severity_level = 3  # errors only: ORT warns about every fp16 fallback on CPU
    return options


class OnnxRuntimeBackend(Backend):
    """One InferenceSession, shared by all threads (ORT's ``run`` is thread-safe)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, device: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.source = self.path.name
        check_onnx_file(self.path)
        providers = available_providers()
        if device in (None, "cuda") and "CUDAExecutionProvider" in providers and _cuda_visible():
            chosen = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cuda":
            raise BackendUnavailableError(
                f"device cuda asked for, but onnxruntime offers only {', '.join(providers)}: install onnxruntime-gpu "
                "(pip install 'smlp-deploy[gpu]') on a machine with an NVIDIA GPU, or run on the CPU (",
                Arg("device", "cpu"), ")", parameter="device"
            )
        else:
            chosen = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=chosen)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise ArtifactError(f"ONNX model {str(self.path)!r} cannot be loaded by onnxruntime: "
                                f"{_ort_reason(exc, self.path)}. It is truncated or damaged, or not an ONNX model: "
                                "export it again") from exc
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        (graph_input,), graph_output = self.session.get_inputs(), self.session.get_outputs()[0]
        if graph_input.type != "tensor(float)" or len(graph_input.shape) != 4:
            raise ArtifactError(f"ONNX model {str(self.path)!r} is not an image classifier of this toolkit: its "
                                f"input {graph_input.name!r} is {graph_input.type} {graph_input.shape}, not "
                                "float [N, 3, H, W]")
        self.input_name, self.output_name = graph_input.name, graph_output.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in graph_input.shape[1:])
        self.num_classes = graph_output.shape[-1] if isinstance(graph_output.shape[-1], int) else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0].astype(np.float32, copy=False)

    def describe(self) -> str:
        return f"onnxruntime {self.provider} ({self.path.name})"


def check_onnx_file(path: Path) -> None:
    """Name what a file that cannot be an ONNX model is; ONNX Runtime says only "Protobuf parsing failed"."""
    kind = file_kind(path)
    if kind.name not in ("onnx", "unknown"):
        raise ArtifactError(f"{str(path)!r} is not an ONNX model: it is {kind.words}. Expected the "
                            ".onnx file of an export (model.onnx, model.fp16.onnx, ...)")


def _ort_reason(exc: Exception, path: Path) -> str:
    """ONNX Runtime's reason without the status code and the path it repeats."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rsplit(f"{path} failed:", 1)[-1].strip().rstrip(".")


def _cuda_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
