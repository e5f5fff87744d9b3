"""FP8 (E4M3) as an ONNX-to-ONNX transformation: the Q/DQ form TensorRT's explicit quantization builds.

Written here rather than by ONNX Runtime's quantizer, whose float8 path scales from the standard deviation of a
Distribution calibration, where TensorRT's FP8 quantization is ``castToFp8(clip(x / s, -448, 448))`` with
``s = amax / 448`` (TensorRT's "Quantization Schemes"). Each choice below names the rule it follows:

* FLOAT8E4M3FN values, zero points 0 of that same type (NvInfer.h, IQuantizeLayer: "Its data type must match the
  output data type. zeroPt must only contain zero-valued coefficients, because only symmetric quantization is
  supported"), scales ``amax / 448``, every one > 0 ("All scale coefficients must have strictly positive values").
* Q/DQ on the inputs of the GEMM-like ops only (Conv, MatMul, Gemm): TensorRT for RTX runs FP8 for matrix
  multiplications only ("Working with Quantized Types", TensorRT-RTX), TensorRT's placement guide quantizes the
  inputs of weighted operations; outputs, biases, normalizations, GELU and residual Adds stay in float.
* Activations per tensor ("Per-channel quantization is supported only for weight inputs. Thus, Activations cannot
  be quantized per-channel", NvInfer.h); weights per channel on their output-channel axis where TensorRT takes it
  (Conv axis 0, Gemm's B axis 0 with transB, a MatMul's constant second operand on its last axis: "Per-Channel
  Scaling for FP8 GEMMs", TensorRT 10.6), and per tensor for a MatMul's constant *first* operand (sMLPNet's
  ``W @ x`` height mixing), whose per-channel form TensorRT does not document (as in the INT8 form).
* Weights stored as FP8 with a DequantizeLinear only ("When using pre-quantized weights, an IDequantizeLayer is
  required between the weights and the linear operator", TensorRT's "Explicit Quantization"): half the bytes.
* Ops whose FP8 kernels NVIDIA's own quantizer leaves alone stay in float: convolutions with fewer than 16 input or
  output channels per group (the stem, the depthwise convs) or more than 32 filter taps, and GEMMs whose K or N is
  below 16 (ModelOpt 0.47, ``modelopt.onnx.quantization.graph_utils``: FP8 tensor-core kernels need them).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import CalibrationError
from .quantize import check_ranges

FP8_MAX = 448.0  # the largest finite E4M3FN value: TensorRT's FP8 quantize clips to [-448, 448] (NvInfer.h)
FP8_OPSET = 19  # QuantizeLinear and DequantizeLinear take FLOAT8E4M3FN from opset 19
GEMM_OPS = ("Conv", "MatMul", "Gemm")
MIN_CHANNELS = 16  # per group, for a Conv; and K, N for a GEMM (ModelOpt's _MIN_CHANNELS_FP8, _MIN_MATMUL_DIM)
MAX_FILTER_TAPS = 32  # ModelOpt's FP8 convolution limit (a 4x4 stem has 16, a 7x7 one 49)
# FP8 takes the largest magnitude seen or a percentile of it: E4M3's exponent spans 2^-9 to 448, so the range only
# needs to hold the largest values, and the KL search (entropy) scores thresholds against INT8's uniform levels.
METHODS = ("minmax", "percentile")


@dataclass(frozen=True)
class QuantizedInput:
    """One input of a GEMM-like node that the FP8 form quantizes."""

    node: onnx.NodeProto
    index: int  # the input's position
    weight: np.ndarray | None  # the initializer's value; None for an activation
    axis: int | None  # the per-channel axis of a weight; None: per tensor


def fp8_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """The Conv/MatMul/Gemm nodes of ``model`` that the FP8 form runs in FP8."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in GEMM_OPS and _has_fp8_kernel(node, weights, shapes):
            yield node


def _has_fp8_kernel(node: onnx.NodeProto, weights: dict[str, tuple[int, ...]], shapes: dict[str, list[int]]) -> bool:
    if node.op_type == "Conv":
        weight = weights.get(node.input[1])
        if weight is None:
            return False  # TensorRT quantizes constant Conv weights only
        groups = _attribute(node, "group", 1)
        return (min(weight[0] // groups, weight[1]) >= MIN_CHANNELS and math.prod(weight[2:]) <= MAX_FILTER_TAPS)
    a, b = (weights.get(name) or tuple(shapes.get(name, ())) for name in node.input[:2])
    if node.op_type == "Gemm":
        k = b[1] if _attribute(node, "transB", 0) else b[0]
        n = b[0] if _attribute(node, "transB", 0) else b[1]
    else:
        k, n = a[-1] if a else 0, (shapes.get(node.output[0]) or [0])[-1]
    return all(d == 0 or d >= MIN_CHANNELS for d in (k, n))  # 0: unknown (dynamic), left to TensorRT


def quantized_inputs(model: onnx.ModelProto) -> list[QuantizedInput]:
    """Every input the FP8 form quantizes, in graph order, with the per-channel axis of each weight."""
    weights = {i.name: i for i in model.graph.initializer}
    found = []
    for node in fp8_nodes(model):
        for index, name in enumerate(node.input[:2]):
            weight = numpy_helper.to_array(weights[name]) if name in weights else None
            found.append(QuantizedInput(node, index, weight, None if weight is None else _weight_axis(node, index,
                                                                                                   weight.ndim)))
    return found


def _weight_axis(node: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The output-channel axis of a weight where TensorRT takes per-channel scales for it; None: per tensor."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if _attribute(node, "transB", 0) else 1
    return rank - 1 if index == 1 else None  # MatMul: x @ W is per channel, W @ x per tensor


def fp8_calibrated_tensors(model: onnx.ModelProto) -> list[str]:
    """The activations whose ranges the FP8 form needs, in graph order (weights need no calibration)."""
    return list(dict.fromkeys(q.node.input[q.index] for q in quantized_inputs(model) if q.weight is None))


def quantize_fp8(float_model: str | Path, ranges: dict[str, tuple[float, float]], *,
                 keep_float: Collection[str] = ()) -> onnx.ModelProto:
    """The FP8 Q/DQ model of the float ONNX file ``float_model``, its activations scaled from ``ranges``, which must
    hold every tensor :func:`fp8_calibrated_tensors` names. Float parts, scales and biases are float32; with
    fp16 float parts, convert the result as a whole (the scales follow, as TensorRT's strong typing wants them).
    The nodes named in ``keep_float`` (of :func:`fp8_nodes`) stay in the float parts' precision (float fallback)."""
    model = onnx.load(str(float_model))
    if _opset(model) < FP8_OPSET:
        model = onnx.version_converter.convert_version(model, FP8_OPSET)
    inputs = quantized_inputs(model)
    unknown = sorted(set(keep_float) - {q.node.name for q in inputs})
    if unknown:
        raise CalibrationError(f"keep_float names {unknown[0]!r}, which is not a node the FP8 form of {float_model} "
                               "quantizes: name nodes of fp8_nodes(model)", parameter="keep_float")
    inputs = [q for q in inputs if q.node.name not in keep_float]
    needed = list(dict.fromkeys(q.node.input[q.index] for q in inputs if q.weight is None))
    missing = [name for name in needed if name not in ranges]
    if missing:
        raise CalibrationError(f"the ranges lack {len(missing)} of the {len(needed)} tensors the FP8 form quantizes "
                               f"(e.g. {missing[0]!r}): calibrate for FP8", parameter="ranges")
    check_ranges(ranges, needed)
    graph = model.graph
    replaced: dict[tuple[str, int | None], str] = {}  # (tensor, axis) -> its dequantized tensor
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # position in the graph -> nodes inserted before it
    positions = {id(node): i for i, node in enumerate(graph.node)}
    for q in inputs:
        name = q.node.input[q.index]
        key = (name, q.axis)
        if key not in replaced:
            if q.weight is None:
                scale = _scale(max(abs(ranges[name][0]), abs(ranges[name][1])))
                nodes = _activation_qdq(graph, name, scale)
                # Before the first consumer: the producer of an activation always comes earlier.
                new_nodes.setdefault(positions[id(q.node)], []).extend(nodes)
            else:
                nodes = [_weight_dq(graph, name, q.weight, q.axis)]
                new_nodes.setdefault(positions[id(q.node)], []).extend(nodes)
            replaced[key] = nodes[-1].output[0]
        q.node.input[q.index] = replaced[key]
    ordered = []
    for i, node in enumerate(graph.node):
        ordered += new_nodes.get(i, []) + [node]
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _scale(amax: float) -> np.float32:
    """``amax / 448`` (``check_ranges`` has refused a zero or non-finite range)."""
    return np.float32(amax / FP8_MAX)


def to_fp8(values: np.ndarray) -> np.ndarray:
    """``castToFp8(clip(x, -448, 448))``: round to nearest even E4M3FN, saturating (E4M3FN has no infinity; an
    unclipped overflow would be NaN)."""
    fp8: np.ndarray = np.clip(values, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)  # ml_dtypes: untyped
    return fp8


def _activation_qdq(graph: onnx.GraphProto, name: str, scale: np.float32) -> list[onnx.NodeProto]:
    scale_name, zero_name = f"{name}_fp8_scale", f"{name}_fp8_zero_point"
    graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                              numpy_helper.from_array(np.zeros((), ml_dtypes.float8_e4m3fn), zero_name)])
    quantize = helper.make_node("QuantizeLinear", [name, scale_name, zero_name], [f"{name}_fp8"],
                                name=f"{name}_QuantizeLinear")
    dequantize = helper.make_node("DequantizeLinear", [f"{name}_fp8", scale_name, zero_name],
                                  [f"{name}_fp8_dequantized"], name=f"{name}_DequantizeLinear")
    return [quantize, dequantize]


def _weight_dq(graph: onnx.GraphProto, name: str, weight: np.ndarray, axis: int | None) -> onnx.NodeProto:
    if axis is None:
        scale = np.array(_scale(float(np.abs(weight).max())), np.float32)
        quantized = to_fp8(weight / scale)
    else:
        others = tuple(a for a in range(weight.ndim) if a != axis)
        amax = np.abs(weight).max(axis=others)
        scale = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(np.float32)
        quantized = to_fp8(weight / np.expand_dims(scale, others))
    stem = f"{name}_fp8" + ("" if axis is None else f"_axis{axis}")
    graph.initializer.extend([numpy_helper.from_array(quantized, stem),
                              numpy_helper.from_array(scale, f"{stem}_scale"),
                              numpy_helper.from_array(np.zeros(scale.shape, ml_dtypes.float8_e4m3fn),
                                                      f"{stem}_zero_point")])
    node = helper.make_node("DequantizeLinear", [stem, f"{stem}_scale", f"{stem}_zero_point"],
                            [f"{stem}_dequantized"], name=f"{stem}_DequantizeLinear")
    if axis is not None:  # written even where it is the default: ONNX-TensorRT 10.0/10.1 read a missing one as 0
        node.attribute.append(helper.make_attribute("axis", axis))
    return node


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _opset(model: onnx.ModelProto) -> int:
    version: int = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return version
