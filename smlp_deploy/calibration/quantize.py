"""INT8 as an ONNX-to-ONNX transformation: Q/DQ nodes placed by ONNX Runtime's quantizer from cached ranges.

Both targets are signed int8 with zero points 0 (the ranges are symmetric), biases in float, Q/DQ on the inputs of
Conv/MatMul/Gemm and never on their outputs. ``tensorrt`` is the form TensorRT's explicit quantization consumes:
per-channel weight scales on the output-channel axis where TensorRT takes them (Conv, Gemm, a MatMul's constant
second operand), per-tensor scales for the constant first operand of sMLPNet's ``W @ x`` height mixing, nothing
else quantized. ``cpu`` is the form OpenVINO's CPU plugin runs as fused int8 kernels, and ONNX Runtime runs too:
per-channel ``W @ x`` weights (on axis 0), and Q/DQ on both inputs of each Add that sums a Conv's output with
another activation (:func:`conv_sums`).

What the CPU form is was read from OpenVINO 2026.4's runtime graph (``compiled.get_runtime_model()``: each node's
``layerType``, ``runtimePrecision`` and the ONNX nodes it runs), NNCF 3.4's INT8 of the same model beside it
(docs/cpu.md, "INT8 on OpenVINO"):

* Zero points 0. The form was ONNX Runtime's own until then (uint8 activations, zero points 128, Q/DQ on outputs
  too, for its QLinear kernels): OpenVINO ran it at 0.70-0.77x of NNCF's INT8, each zero point an fp32 Subtract
  before an int8 kernel and each output Q/DQ an fp32 FakeQuantize after one, its ``W @ x`` MatMuls in fp32.
* The Conv sums take int8 on both inputs: the plugin fuses the Add into the Conv as an int8 sum. Without these
  Q/DQ it also computes sMLPNet wrongly (Q/DQ on the inputs of Conv/MatMul/Gemm only: logits at cosine 0.27 to
  ONNX Runtime's on the same file; the TensorRT form's 0.09 is the same failure).
* A Concat's quantized inputs share its output's scale, the widest of their ranges (:func:`concat_ranges`): the
  plugin moves the Q/DQ of a Concat's output onto its inputs, and the sMLP block's identity branch, quantized for
  the mixing MatMuls too, would otherwise be requantized int8 to int8 (a pass and a reorder per block). The
  Concat's own range alone would clip that branch: OpenVINO's logits then moved off ONNX Runtime's (worst photo
  at cosine 0.99897, 0.99999 with the widest range).
* Left fp32, though NNCF quantizes it: the residual Add after the channel MLP. The plugin's int8 Eltwise there
  rescales one input onto the other's scale; its logits moved from ONNX Runtime's on the same file (worst photo at
  cosine 0.9974 on the digits model), and ONNX Runtime ran that form at 0.82-0.84x.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import ArtifactKind, onnx_artifact
from ..errors import CalibrationError

# Inputs of these ops get Q/DQ in both forms (TensorRT's recommended placement); the CPU form adds Conv sums.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    fp16_float_parts: bool  # with FP16 exports; ONNX Runtime's CPU kernels have no fast fp16, so cpu stays fp32
    # Per-channel scales for a MatMul's constant *first* operand. TensorRT documents per-channel MatMul weights
    # only as the second operand, so its form scales them per tensor: on the digits fixture that gave 448/450
    # held-out images right against 447/450 per channel (fp16 float parts; 448/450 both with fp32 ones).
    per_channel_left_weights: bool
    # Q/DQ on both inputs of the Adds of a Conv's output, Concat inputs on one scale: what OpenVINO fuses.
    conv_sums: bool

    @property
    def artifact(self) -> ArtifactKind:
        return onnx_artifact("int8", self.name)

    def quantized_nodes(self, model: onnx.ModelProto) -> list[onnx.NodeProto]:
        """The nodes whose inputs this form quantizes, in graph order."""
        sums = set(conv_sums(model)) if self.conv_sums else set()
        return [n for i, n in enumerate(model.graph.node) if n.op_type in QUANTIZED_OPS or i in sums]

    def calibrated_tensors(self, model: onnx.ModelProto) -> list[str]:
        """The activations whose ranges this form's Q/DQ nodes take, in graph order: the non-constant inputs of
        the nodes it quantizes. Weights need no calibration."""
        constants = {i.name for i in model.graph.initializer}
        return list(dict.fromkeys(t for n in self.quantized_nodes(model) for t in n.input if t and t not in constants))


TARGETS = {
    t.name: t
    for t in (
        Target("tensorrt", "TensorRT explicit quantization (s8s8, symmetric, inputs of Conv/MatMul/Gemm)",
               fp16_float_parts=True, per_channel_left_weights=False, conv_sums=False),
        Target("cpu", "OpenVINO and ONNX Runtime on x86 CPUs (s8s8, symmetric, inputs of Conv/MatMul/Gemm and "
               "of the Adds summing a Conv's output)", fp16_float_parts=False, per_channel_left_weights=True,
               conv_sums=True),
    )
}


def calibrated_tensors(model: onnx.ModelProto, targets: Iterable[str]) -> list[str]:
    """Every tensor a range is needed for by any of ``targets`` (names in TARGETS)."""
    return list(dict.fromkeys(t for name in targets for t in TARGETS[name].calibrated_tensors(model)))


def conv_sums(model: onnx.ModelProto) -> list[int]:
    """The positions in ``model.graph.node`` of the Adds of two activations one of which a Conv produces (sMLPNet's
    residual connection around the token mixing): the sums OpenVINO's CPU plugin fuses into that Conv."""
    constants = {i.name for i in model.graph.initializer}
    convs = {out for node in model.graph.node if node.op_type == "Conv" for out in node.output}
    return [i for i, n in enumerate(model.graph.node)
            if n.op_type == "Add" and not constants & set(n.input) and convs & set(n.input)]


def concat_ranges(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """``ranges`` with each quantized Concat output and its quantized inputs on the widest of their ranges (the
    Concat's output holds its inputs' values; an input quantized for other ops too may reach further)."""
    shared = dict(ranges)
    for node in model.graph.node:
        if node.op_type == "Concat" and node.output[0] in ranges:
            group = [name for name in (*node.input, node.output[0]) if name in ranges]
            low, high = min(shared[name][0] for name in group), max(shared[name][1] for name in group)
            shared.update(dict.fromkeys(group, (low, high)))
    return shared


def left_operand_weights(model: onnx.ModelProto) -> list[str]:
    """MatMul weights used as ``weight @ x`` (sMLPNet's H-axis mixing): their output channels are axis 0, not
    the axis 1 the quantizer assumes for MatMul weights, so they are scaled on axis 0 or per tensor."""
    initializers = {i.name for i in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in initializers]


def quantize_qdq(float_model: str | Path, ranges: dict[str, tuple[float, float]], target: Target, *,
                 keep_float: Collection[str] = ()) -> onnx.ModelProto:
    """The Q/DQ model for ``target``, quantized from the float ONNX file ``float_model`` with ``ranges``, which
    must hold every tensor ``target.calibrated_tensors`` names (the quantizer would silently leave a tensor
    without a range in float), each finite and wider than 0 (the quantizer would make a scale up for it). The
    Conv/MatMul/Gemm nodes named in ``keep_float`` get no Q/DQ of their own: they run in the float parts' precision
    (float fallback)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    source = onnx.load(str(float_model))
    unknown = sorted(set(keep_float) - {n.name for n in source.graph.node if n.op_type in QUANTIZED_OPS})
    if unknown:
        raise CalibrationError(f"keep_float names {unknown[0]!r}, which is not a Conv, MatMul or Gemm node of "
                               f"{float_model}: name nodes of the float model", parameter="keep_float")
    needed = target.calibrated_tensors(source)
    missing = [name for name in needed if name not in ranges]
    if missing:
        raise CalibrationError(f"the ranges lack {len(missing)} of the {len(needed)} tensors the {target.name} form "
                               f"quantizes (e.g. {missing[0]!r}): calibrate for target {target.name!r}",
                               parameter="ranges")
    check_ranges(ranges, needed)
    nodes = [n for n in target.quantized_nodes(source) if n.name not in keep_float]
    op_types = sorted({n.op_type for n in nodes})
    options = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "TensorQuantOverrides": {name: [{"axis": 0} if target.per_channel_left_weights else {"symmetric": True}]
                                 for name in left_operand_weights(source)},
        "OpTypesToExcludeOutputQuantization": op_types,
    }
    used = concat_ranges(source, {name: ranges[name] for name in needed}) if target.conv_sums else ranges
    # The ranges are final: the method label only has to match between the range file and the call.
    label = CalibrationMethod.MinMax
    tensors = TensorsData(label, {
        name: TensorData(lowest=np.float32(used[name][0]), highest=np.float32(used[name][1])) for name in needed
    })
    with tempfile.TemporaryDirectory(prefix="smlp-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(tensors, cache)
        quantized = Path(tmp) / "model.onnx"
        with _root_warnings_silenced():
            quantize_static(
                source, quantized, calibration_data_reader=None, calibration_cache_path=cache,
                quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types, nodes_to_quantize=[n.name for n in nodes],
                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=label, extra_options=options,
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


def check_ranges(ranges: dict[str, tuple[float, float]], names: Iterable[str]) -> None:
    """Refuse a range a Q/DQ scale cannot come from (zero wide, or not finite: a hand-edited cache, say), naming
    the tensor, rather than quantize it to nothing or to NaN."""
    unusable = [name for name in names if not (np.isfinite(ranges[name]).all() and ranges[name][0] < ranges[name][1])]
    if unusable:
        raise CalibrationError(f"the range of tensor {unusable[0]!r} is {tuple(ranges[unusable[0]])} ({len(unusable)} "
                               "tensor(s) like it): a Q/DQ scale needs a finite range wider than 0; recalibrate",
                               parameter="ranges")
