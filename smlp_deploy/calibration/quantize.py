"""INT8 as an ONNX-to-ONNX transformation: Q/DQ nodes placed by ONNX Runtime's quantizer from cached ranges.

Two targets. ``tensorrt`` is the form TensorRT's explicit quantization consumes: signed int8, zero points 0,
per-channel weight scales on the output-channel axis where TensorRT takes them (Conv, Gemm, a MatMul's constant
second operand), per-tensor scales for the constant first operand of sMLPNet's ``W @ x`` height mixing, Q/DQ
only on the inputs of Conv/MatMul/Gemm, biases in float. ``cpu`` is the form ONNX Runtime's x86 kernels run
fastest: uint8 activations with zero points, and Q/DQ on outputs too, so whole QLinear chains form; it is for
ONNX Runtime only.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import ArtifactKind, onnx_artifact
from ..errors import CalibrationError

# Inputs of these ops get Q/DQ in both forms (TensorRT's recommended placement), outputs too in the CPU form.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    unsigned_activations: bool
    quantize_outputs: bool
    fp16_float_parts: bool  # with FP16 exports; ONNX Runtime's CPU kernels have no fast fp16, so cpu stays fp32
    # Per-channel scales for a MatMul's constant *first* operand. TensorRT documents per-channel MatMul weights
    # only as the second operand, so its form scales them per tensor: on the digits fixture that gave 448/450
    # held-out images right against 447/450 per channel (fp16 float parts; 448/450 both with fp32 ones).
    per_channel_left_weights: bool

    @property
    def artifact(self) -> ArtifactKind:
        return onnx_artifact("int8", self.name)

    def calibrated_tensors(self, model: onnx.ModelProto) -> list[str]:
        """The activations whose ranges this form's Q/DQ nodes take, in graph order: the non-constant inputs
        of Conv/MatMul/Gemm, and their outputs where outputs are quantized. Weights need no calibration."""
        constants = {i.name for i in model.graph.initializer}
        names = []
        for node in model.graph.node:
            if node.op_type in QUANTIZED_OPS:
                names += [t for t in node.input if t and t not in constants]
                names += list(node.output) if self.quantize_outputs else []
        return list(dict.fromkeys(names))


TARGETS = {
    t.name: t
    for t in (
        Target("tensorrt", "TensorRT explicit quantization (s8s8, symmetric, inputs of Conv/MatMul/Gemm)",
               unsigned_activations=False, quantize_outputs=False, fp16_float_parts=True,
               per_channel_left_weights=False),
        Target("cpu", "ONNX Runtime on x86 CPUs (u8s8, Q/DQ on inputs and outputs)",
               unsigned_activations=True, quantize_outputs=True, fp16_float_parts=False,
               per_channel_left_weights=True),
    )
}


def calibrated_tensors(model: onnx.ModelProto, targets: Iterable[str]) -> list[str]:
    """Every tensor a range is needed for by any of ``targets`` (names in TARGETS)."""
    return list(dict.fromkeys(t for name in targets for t in TARGETS[name].calibrated_tensors(model)))


def left_operand_weights(model: onnx.ModelProto) -> list[str]:
    """MatMul weights used as ``weight @ x`` (sMLPNet's H-axis mixing): their output channels are axis 0, not
    the axis 1 the quantizer assumes for MatMul weights, so they are scaled on axis 0 or per tensor."""
    initializers = {i.name for i in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in initializers]


def quantize_qdq(float_model: str | Path, ranges: dict[str, tuple[float, float]], target: Target) -> onnx.ModelProto:
    """The Q/DQ model for ``target``, quantized from the float ONNX file ``float_model`` with ``ranges``, which
    must hold every tensor ``target.calibrated_tensors`` names (the quantizer would silently leave a tensor
    without a range in float), each finite and wider than 0 (the quantizer would make a scale up for it)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    source = onnx.load(str(float_model))
    needed = target.calibrated_tensors(source)
    missing = [name for name in needed if name not in ranges]
    if missing:
        raise CalibrationError(f"the ranges lack {len(missing)} of the {len(needed)} tensors the {target.name} form "
                               f"quantizes (e.g. {missing[0]!r}): calibrate for target {target.name!r}",
                               parameter="ranges")
    unusable = [name for name in needed if not (np.isfinite(ranges[name]).all() and ranges[name][0] < ranges[name][1])]
    if unusable:
        raise CalibrationError(f"the range of tensor {unusable[0]!r} is {tuple(ranges[unusable[0]])} ({len(unusable)} "
                               "tensor(s) like it): a Q/DQ scale needs a finite range wider than 0; recalibrate",
                               parameter="ranges")
    options = {
        "ActivationSymmetric": not target.unsigned_activations,
        "WeightSymmetric": True,
        "QuantizeBias": target.unsigned_activations,  # TensorRT takes float biases, ORT's CPU kernels int32
        "TensorQuantOverrides": {name: [{"axis": 0} if target.per_channel_left_weights else {"symmetric": True}]
                                 for name in left_operand_weights(source)},
    }
    if not target.quantize_outputs:
        options["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OPS)
    # The ranges are final: the method label only has to match between the range file and the call.
    label = CalibrationMethod.MinMax
    tensors = TensorsData(label, {
        name: TensorData(lowest=np.float32(ranges[name][0]), highest=np.float32(ranges[name][1])) for name in needed
    })
    with tempfile.TemporaryDirectory(prefix="smlp-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(tensors, cache)
        quantized = Path(tmp) / "model.onnx"
        with _root_warnings_silenced():
            quantize_static(
                source, quantized, calibration_data_reader=None, calibration_cache_path=cache,
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                activation_type=QuantType.QUInt8 if target.unsigned_activations else QuantType.QInt8,
                weight_type=QuantType.QInt8, calibrate_method=label, extra_options=options,
            )
        return onnx.load(str(quantized))


@contextmanager
def _root_warnings_silenced() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a pre-processing hint and per-tensor notes on the root logger at every
    call; ranges come from our own calibration, so they do not apply. Only the quantizer's own records are
    dropped, and only while it runs: the application's logging is left as it was."""
    root = logging.getLogger()
    root.addFilter(_not_from_quantizer)
    try:
        yield
    finally:
        root.removeFilter(_not_from_quantizer)


def _not_from_quantizer(record: logging.LogRecord) -> bool:
    parts = Path(record.pathname).parts
    return record.levelno > logging.WARNING or not ("onnxruntime" in parts and "quantization" in parts)
