"""OpenVINO on the CPU: the export's ONNX files in FP32, or in bf16 where the CPU has bf16 instructions.

OpenVINO's own default on a CPU with AVX-512 BF16 or AMX is bf16, so an FP32 model opened with its defaults gives
bf16 results without a word. Here the precision is always set, and read back from the compiled model:

* ``precision="fp32"`` (the default): OpenVINO's ``INFERENCE_PRECISION_HINT`` f32, the artifact's own arithmetic.
* ``precision="bf16"``: the float parts in bf16 (ONNX Runtime has no bf16 kernels on x86; here 1.5-1.6x its FP32
  at batch 1 and 8, docs/cpu.md); a CPU without bf16 is a :class:`BackendUnavailableError`, never a silent
  fallback. Its parity is measured at export time (``smlp-export --openvino``).

The export's batch dimension is dynamic and compiled once: a compile per batch size would be 9-14% faster, at a
compile and memory of its own for every size a caller sends; bounding the dimension instead gains nothing
(docs/benchmarks/openvino_cpu.py shapes, docs/cpu.md).

INT8 Q/DQ graphs (``model.int8.cpu.onnx``) run their quantized ops in int8 either way; ``precision`` sets their
float parts. ``describe()`` says what the compiled model computes in, read from OpenVINO's runtime model: how many
of its Convolution/FullyConnected/MatMul layers run int8 kernels (all 161 of sMLPNet-T's in the CPU form; 135 in
the earlier uint8 form, whose ``W @ x`` MatMuls stayed fp32).

Threads: the compiled model is shared; an infer request is not thread-safe, so each thread gets its own (made on
its first call). ``threads`` caps OpenVINO's CPU threads (default: every core this process may use), one stream
with the latency hint: one call at a time uses them all, as ONNX Runtime's intra-op pool does.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...cpu import bf16_missing, cpu_cores, openvino_cpu_capabilities
from ...errors import Arg, ArtifactError, BackendUnavailableError, InputError
from .base import Backend

if TYPE_CHECKING:
    import openvino as ov

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's element type names
DEVICE = "CPU"
HEAVY_LAYERS = ("Convolution", "FullyConnected", "MatMul")  # OpenVINO's layer types of Conv, Gemm/MatMul


class OpenVINOBackend(Backend):
    """An ONNX file compiled by OpenVINO for the CPU in ``precision`` ("fp32" or "bf16")."""

    name = "openvino"
    device = "cpu"

    def __init__(self, path: str | Path, *, precision: str | None = None, threads: int | None = None):
        import openvino as ov

        self.path = Path(path)
        self.source = self.path.name
        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise InputError(f"OpenVINO computes in {', '.join(PRECISIONS)}, not {precision!r}", parameter="precision")
        core = ov.Core()
        missing = bf16_missing(openvino_cpu_capabilities(core)) if precision == "bf16" else None
        if missing:
            cpu = core.get_property(DEVICE, "FULL_DEVICE_NAME")
            raise BackendUnavailableError(f"bf16 cannot run here: {missing} ({cpu}); use ", Arg("precision", "fp32"),
                                          ", or the INT8 CPU form (model.int8.cpu.onnx)", parameter="precision")
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, DEVICE, {
                "INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads or cpu_cores()})
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable, invalid or unsupported models
            raise ArtifactError(f"ONNX model {str(self.path)!r} cannot be loaded by OpenVINO: "
                                f"{_last_line(exc)}") from exc
        self.compute_precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if self.compute_precision != precision:  # OpenVINO keeps f32 where the CPU lacks what was hinted
            raise BackendUnavailableError(f"OpenVINO compiled {self.path.name} in {self.compute_precision}, not the "
                                          f"{precision} asked for", parameter="precision")
        self.version = ov.get_version().split("-")[0]
        # What its heaviest layers run in, from the compiled graph: u8/i8 where a Q/DQ graph is quantized.
        self.layer_precisions = runtime_precisions(self.compiled, HEAVY_LAYERS)
        self.int8_layers = sum(n for (_, precision), n in self.layer_precisions.items() if precision in ("u8", "i8"))
        self.quantized = self.int8_layers > 0
        graph_input, graph_output = model.input(0), model.output(0)
        shape = graph_input.get_partial_shape()
        if len(model.inputs) != 1 or graph_input.get_element_type() != ov.Type.f32 or shape.rank.get_length() != 4:
            raise ArtifactError(f"ONNX model {str(self.path)!r} is not an image classifier of this toolkit: its "
                                f"input {graph_input.get_any_name()!r} is {graph_input.get_element_type()} {shape}, "
                                "not float [N, 3, H, W]")
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in list(shape)[1:])
        classes = graph_output.get_partial_shape()[-1]
        self.num_classes = classes.get_length() if classes.is_static else None
        self._output = self.compiled.output(0)
        self._local = threading.local()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        # The call is synchronous, so the request may read the caller's batch in place (as a compiled model called
        # as a function does); share_outputs=False (the default) copies the logits out of the request, which the
        # next call reuses.
        logits: np.ndarray = request.infer({0: batch}, share_inputs=True)[self._output]
        return logits.astype(np.float32, copy=False)

    def describe(self) -> str:
        """What OpenVINO's compiled graph runs: for a Q/DQ graph, how many of its heavy layers are int8 kernels."""
        heavy = sum(self.layer_precisions.values())
        quantized = f"int8 ({self.int8_layers} of {heavy} {'/'.join(HEAVY_LAYERS)} layers), float parts " \
            if self.quantized else ""
        return f"openvino {self.version} CPU {quantized}{self.compute_precision} ({self.path.name})"

    def _release(self) -> None:
        self._local = threading.local()  # drops every thread's infer request
        self.compiled = None


def runtime_precisions(compiled: ov.CompiledModel, layer_types: tuple[str, ...]) -> Counter[tuple[str, str]]:
    """(layer type, precision) of the layers of ``layer_types`` in what OpenVINO compiled (its runtime model, each
    node's ``layerType`` and ``runtimePrecision``): the kernels that really run, counted."""
    infos = (op.get_rt_info() for op in compiled.get_runtime_model().get_ops())
    return Counter((layer, info["runtimePrecision"].astype(str)) for info in infos
                   if (layer := info["layerType"].astype(str)) in layer_types)


def precision_name(element_type: ov.Type) -> str:
    """Our name of an OpenVINO element type ("fp32" for f32), the type's own name otherwise."""
    name = element_type.get_type_name()  # "f32", "bf16"
    return next((ours for ours, theirs in PRECISIONS.items() if theirs == name), name)


def _last_line(exc: Exception) -> str:
    """OpenVINO's messages start with the C++ file and check that failed; the last line says what was wrong."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
