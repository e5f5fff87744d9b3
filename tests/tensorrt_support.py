"""Will TensorRT accept this? An ONNX graph checked against ONNX-TensorRT's operator table, and a trtexec line
against trtexec's options, for the releases in ``tests/data/tensorrt/`` (see ``tests/tensorrt_tables.py``).

The graph check covers what the table documents (op, opset range, the types in "Supported Types", the
restrictions in its text) and the Q/DQ rules TensorRT documents elsewhere, in ``include/NvInfer.h``
(IQuantizeLayer, IDequantizeLayer) and its developer guide:

* scale and zero point are build-time constants, every scale > 0, every zero point 0 and of the quantized type
  (INT8, or FP8 for an FP8 Q/DQ: "Its data type must match the output data type");
* a half-precision scale has the type of the tensor it quantizes ("For strongly typed networks, if the scale
  data type is DataType::kHALF or DataType::kBF16, it must match the input data type");
* FP8 Q/DQ only on the inputs of GEMM-like ops (Conv, MatMul, Gemm): TensorRT for RTX runs FP8 for matrix
  multiplications only ("Working with Quantized Types", TensorRT-RTX);
* a scale is a scalar (per tensor) or 1-D (per channel) with one value per slice of the quantized axis, and the
  axis is written out (ONNX-TensorRT 10.0/10.1 read a missing ``axis`` as 0, newer ones as 1);
* per-channel scales only for weights (a DQ rooted at an initializer), and only on the weight's output-channel
  axis as the op consuming it takes it: Conv's weight on axis 0, Gemm's B on axis 0 with ``transB=1`` (1
  without), and MatMul's *second* operand on its last axis ("MatMul where the second input is constant").
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .tensorrt_tables import Operator, OperatorTable

TYPE_NAMES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE", TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT4: "INT4", TensorProto.FLOAT4E2M1: "FP4",
}
FLOAT_TYPES = ("FP32", "FP16", "BF16")
QUANTIZED_TYPES = ("INT8", "FP8")
HALF_TYPES = ("FP16", "BF16")
GEMM_OPS = ("Conv", "MatMul", "Gemm")
AXES_INPUT = {"ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1, "Slice": 3, "Squeeze": 1,
              "Unsqueeze": 1}


class Graph:
    """One model with what the rules ask about it: tensor types (after shape inference), constants, consumers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.shape_inference.infer_shapes(model)  # a tensor it cannot type stays "unknown"
        graph = self.model.graph
        self.initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and any(a.name == "value" for a in node.attribute):
                self.initializers[node.output[0]] = numpy_helper.to_array(
                    next(a.t for a in node.attribute if a.name == "value"))
        self.types = {v.name: v.type.tensor_type.elem_type
                      for v in [*graph.input, *graph.output, *graph.value_info]}
        self.types.update({i.name: i.data_type for i in graph.initializer})
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            for index, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, index))

    def type_name(self, tensor: str) -> str:
        return TYPE_NAMES.get(self.types.get(tensor, TensorProto.UNDEFINED), "unknown")


def check_graph(model: onnx.ModelProto, table: OperatorTable) -> list[str]:
    """Everything in ``model`` that TensorRT ``table.release``'s ONNX parser does not document as supported, one
    line per problem, naming the op and the node; empty if nothing."""
    problems = []
    for opset in model.opset_import:
        lo, hi = table.opsets
        if opset.domain not in ("", "ai.onnx"):
            problems.append(f"opset domain {opset.domain!r}: TensorRT's parser reads only the default ONNX domain")
        elif not lo <= opset.version <= hi:
            problems.append(f"opset {opset.version} is outside TensorRT {table.release}'s opsets {lo}-{hi}")
    graph = Graph(model)
    for node in graph.model.graph.node:
        where = f"{node.op_type} node {node.name!r}"
        row = table.operators.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if row is None or not row.supported:
            why = "marked unsupported" if row else "not in the table"
            problems.append(f"{where}: {node.domain + '.' if node.domain else ''}{node.op_type} is {why} "
                            f"(ONNX-TensorRT operators.md for TensorRT {table.release})")
            continue
        found = _type_problems(node, row, graph) + _restriction_problems(node, row, graph)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            found += _qdq_problems(node, graph)
        problems += [f"{where}: {p}" for p in found]
    return problems


def _type_problems(node: onnx.NodeProto, row: Operator, graph: Graph) -> list[str]:
    """The "Supported Types" column names the op's data type: for QuantizeLinear the float input (and its scale),
    for DequantizeLinear the quantized input; every other op's inputs and outputs must all be of those types."""
    if node.op_type == "QuantizeLinear":
        checked, outside = node.input[:2], {node.output[0]: QUANTIZED_TYPES}
    elif node.op_type == "DequantizeLinear":
        checked, outside = node.input[:1], {node.output[0]: FLOAT_TYPES, node.input[1]: FLOAT_TYPES}
    else:
        checked, outside = [*node.input, *node.output], {}
    problems = []
    for tensor in checked:
        if tensor and graph.type_name(tensor) not in row.types:
            problems.append(f"tensor {tensor!r} is {graph.type_name(tensor)}; the table lists {', '.join(row.types)}")
    for tensor, allowed in outside.items():
        if graph.type_name(tensor) not in allowed:
            problems.append(f"tensor {tensor!r} is {graph.type_name(tensor)}, not {' or '.join(allowed)}")
    return problems


def _restriction_problems(node: onnx.NodeProto, row: Operator, graph: Graph) -> list[str]:
    """Each restriction the table states for the op, checked; a restriction no rule knows fails, so a refreshed
    table with new text cannot pass unread."""
    if not row.restrictions:
        return []
    rules = [rule for text, rule in RESTRICTIONS if text in row.restrictions]
    if not rules:
        return [f"no rule checks the table's restriction {row.restrictions!r}: add one to RESTRICTIONS"]
    return [problem for rule in rules for problem in rule(node, graph)]


def _zero_point_is_zero(node: onnx.NodeProto, graph: Graph) -> list[str]:
    if len(node.input) < 3 or not node.input[2]:
        return []  # absent: zero
    zero_point = graph.initializers.get(node.input[2])
    if zero_point is None:
        return [f"zero point {node.input[2]!r} is not a constant"]
    largest = np.abs(zero_point.astype(np.float32)).max()  # INT8 or FP8
    return [f"zero point {node.input[2]!r} is not all zeros (max |zp| {largest:g})"] * bool(np.any(zero_point))


def _axes_constant(node: onnx.NodeProto, graph: Graph) -> list[str]:
    index = AXES_INPUT.get(node.op_type)
    if index is None or len(node.input) <= index or not node.input[index]:
        return []
    axes = node.input[index]
    return [] if axes in graph.initializers else [f"axes {axes!r} is not a constant"]


def _first_output_only(node: onnx.NodeProto, graph: Graph) -> list[str]:
    extra = [o for o in node.output[1:] if o]
    return [f"outputs {extra} are used; only the first output is supported"] if extra else []


def _constant_value_attribute(node: onnx.NodeProto, graph: Graph) -> list[str]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return [f"attribute {bad[0]!r} is unsupported"] if bad else []


# Restriction texts of the table (as they appear in the releases kept) and the rule that checks each.
RESTRICTIONS: list[tuple[str, Callable[[onnx.NodeProto, Graph], list[str]]]] = [
    ("`y_zero_point` must be 0", _zero_point_is_zero),
    ("`x_zero_point` must be zero", _zero_point_is_zero),
    ("`axes` must be an initializer", _axes_constant),
    ("`axes` must be a constant tensor", _axes_constant),
    ("`axes` must be resolvable to a constant", _axes_constant),
    ("Only the first output `Y` is supported", _first_output_only),
    ("`sparse_value`, `value_string`, and `value_strings` attributes are unsupported", _constant_value_attribute),
]


def _qdq_problems(node: onnx.NodeProto, graph: Graph) -> list[str]:
    """The Q/DQ rules of IQuantizeLayer / IDequantizeLayer (NvInfer.h) and the explicit-quantization guide."""
    problems = []
    scale = graph.initializers.get(node.input[1])
    if scale is None:
        return [f"scale {node.input[1]!r} is not a constant"]
    if np.any(scale <= 0):
        problems.append(f"scale {node.input[1]!r} has values <= 0")
    quantized = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
    kind = graph.type_name(quantized)
    expected = kind if kind in QUANTIZED_TYPES else "INT8"
    if len(node.input) > 2 and node.input[2] and graph.type_name(node.input[2]) != expected:
        problems.append(f"zero point {node.input[2]!r} is {graph.type_name(node.input[2])}, not {expected}")
    real = node.input[0] if node.op_type == "QuantizeLinear" else node.output[0]
    if graph.type_name(node.input[1]) in HALF_TYPES and graph.type_name(real) != graph.type_name(node.input[1]):
        problems.append(f"scale {node.input[1]!r} is {graph.type_name(node.input[1])} and {real!r} "
                        f"{graph.type_name(real)}: a half-precision scale must have its tensor's type")
    if kind == "FP8":
        problems += _fp8_placement_problems(node, graph)
    if scale.size == 1 and scale.ndim <= 1:
        return problems  # per tensor
    if scale.ndim != 1:
        return problems + [f"scale {node.input[1]!r} has shape {list(scale.shape)}: per-channel scales are 1-D"]
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    if axis is None:
        return problems + ["per-channel scale without an explicit axis (ONNX-TensorRT 10.0/10.1 read it as 0)"]
    weight = graph.initializers.get(node.input[0])
    if weight is None:
        return problems + [f"per-channel scale on {node.input[0]!r}, which is not a weight: TensorRT takes "
                           "activations per tensor only"]
    axis %= weight.ndim
    if weight.shape[axis] != scale.size:
        problems.append(f"{scale.size} scales for axis {axis} of a weight of shape {list(weight.shape)}")
    consumers = graph.consumers.get(node.output[0], []) if node.op_type == "DequantizeLinear" else [
        c for dq, _ in graph.consumers.get(node.output[0], []) for c in graph.consumers.get(dq.output[0], [])]
    for consumer, operand in consumers:
        wanted = _weight_axis(consumer, operand, weight.ndim)
        if wanted is None:
            problems.append(f"per-channel weight feeds input {operand} of {consumer.op_type} node {consumer.name!r}, "
                            "where TensorRT takes weights per tensor only")
        elif axis != wanted:
            problems.append(f"per-channel axis {axis} for input {operand} of {consumer.op_type} node "
                            f"{consumer.name!r}, whose output channels are axis {wanted}")
    return problems


def _fp8_placement_problems(node: onnx.NodeProto, graph: Graph) -> list[str]:
    """An FP8 DequantizeLinear feeds GEMM-like ops only (a QuantizeLinear, its DequantizeLinear)."""
    if node.op_type == "QuantizeLinear":
        return [f"FP8 output {node.output[0]!r} feeds {c.op_type} node {c.name!r}, not a DequantizeLinear"
                for c, _ in graph.consumers.get(node.output[0], []) if c.op_type != "DequantizeLinear"]
    return [f"FP8 DequantizeLinear feeds {c.op_type} node {c.name!r}: TensorRT for RTX runs FP8 for matrix "
            "multiplications only (Conv, MatMul, Gemm)"
            for c, _ in graph.consumers.get(node.output[0], []) if c.op_type not in GEMM_OPS]


def _weight_axis(node: onnx.NodeProto, operand: int, rank: int) -> int | None:
    """The per-channel axis TensorRT takes for a weight at input ``operand`` of ``node``, or None if none."""
    if node.op_type == "Conv" and operand == 1:
        return 0
    if node.op_type == "Gemm" and operand == 1:
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    if node.op_type == "MatMul" and operand == 1:
        return rank - 1
    return None


def trtexec_problems(command: str, releases: dict[str, set[str]]) -> list[str]:
    """The options of a ``trtexec`` command line that some release in ``releases`` (release -> its options)
    does not have; trtexec stops at an option it does not know."""
    words = shlex.split(command)
    if not words or words[0] != "trtexec":
        return [f"not a trtexec command: {command!r}"]
    problems = []
    for word in words[1:]:
        flag = word.split("=", 1)[0]
        missing = [release for release, flags in releases.items() if flag not in flags]
        if not flag.startswith("--"):
            problems.append(f"{word!r} is not an option")
        elif missing:
            problems.append(f"{flag} is not an option of trtexec {', '.join(missing)}")
    return problems


def binding_problems(source: str, releases: dict[str, set[str]]) -> list[str]:
    """Attribute names in Python ``source`` that TensorRT's bindings define in some of ``releases`` (release ->
    its names) but not in all: a call that works with one TensorRT and fails with another. Names no release
    defines are not TensorRT's (torch's, the module's own) and are left alone."""
    used = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    problems = []
    for name in sorted(used & set().union(*releases.values())):
        missing = [release for release, names in releases.items() if name not in names]
        if missing:
            problems.append(f"{name} is not defined by TensorRT {', '.join(missing)}")
    return problems


def module_names(module: object) -> set[str]:
    """Every name an installed TensorRT module defines: its attributes, and its classes' attributes (methods,
    properties, enum values)."""
    names = set(dir(module))
    for name in list(names):
        value = getattr(module, name, None)
        if isinstance(value, type):
            names |= set(dir(value))
    return names


def unknown_names(source: str, defined: set[str], known: set[str]) -> list[str]:
    """Attribute names in Python ``source`` that neither the module (``defined``) nor anything else it uses
    (``known``: the standard library's and the project's own objects) defines."""
    used = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")}  # its own attributes
    return sorted(used - defined - known)
