"""Peers: a library used as a user would use it without this toolkit, timed in the same run as the toolkit's paths,
so a figure says whether the toolkit's own path is at least as fast as calling the library directly."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import BackendUnavailableError
from ..runtime.backends.base import Backend
from ..runtime.backends.openvino_backend import precision_name


class OpenVINODirect(Backend):
    """OpenVINO called directly: ``ov.Core().compile_model(file, "CPU", hints)`` with OpenVINO's own settings, the
    compiled model called as a function. Only the precision is pinned: ``fp32`` to f32, ``bf16`` to bf16 (OpenVINO's
    own default on CPUs with bf16), ``int8`` (the CPU form) left to OpenVINO's default for the float parts."""

    name = "openvino-direct"
    HINTS: ClassVar[dict[str, dict[str, str]]] = {
        "fp32": {"INFERENCE_PRECISION_HINT": "f32"}, "bf16": {"INFERENCE_PRECISION_HINT": "bf16"}, "int8": {}}

    def __init__(self, path: Path, precision: str):
        import openvino as ov

        self.path, self.source = path, path.name
        self.version = ov.get_version().split("-")[0]
        self.compiled = ov.Core().compile_model(str(path), "CPU", self.HINTS[precision])
        self.compute_precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision != "int8" and self.compute_precision != precision:  # OpenVINO keeps f32 on CPUs without bf16
            raise BackendUnavailableError(f"OpenVINO compiles {path.name} in {self.compute_precision} on this CPU, "
                                          f"not {precision}")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        logits: np.ndarray = self.compiled(batch)[0]  # openvino is untyped
        return logits

    def describe(self) -> str:
        return f"openvino {self.version} CPU, its defaults with {self.compute_precision} ({self.path.name})"

    def _release(self) -> None:
        self.compiled = None
