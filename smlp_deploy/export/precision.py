"""FP16 as an ONNX-to-ONNX transformation: TensorRT 11 builds strongly typed networks, so precision lives in
the graph, where ONNX Runtime can check it on any machine."""

from __future__ import annotations

import onnx
import onnx.version_converter

# Ops kept in float32, chosen by measurement (docs/export.md, "FP16"): the statistics of
# LayerNormalization and the global average pool (ReduceMean) are sums over many values.
FP16_KEEP_FP32_OPS = ("LayerNormalization", "ReduceMean")
# DequantizeLinear outputs the type of its scale, and float16 scales arrive with opset 19.
FP16_SCALES_OPSET = 19


def convert_to_fp16(proto: onnx.ModelProto, keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS) -> onnx.ModelProto:
    """Mixed-precision copy of ``proto``: float16 weights and compute, float32 inputs and outputs, and the ops in
    ``keep_fp32_ops`` in float32 with Casts around them (ONNX Runtime's maintained float16 converter).

    A Q/DQ graph is raised to opset 19 first, so its scales, and with them the dequantized tensors, are fp16."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    if any(n.op_type == "DequantizeLinear" for n in proto.graph.node):
        proto = _with_opset(proto, FP16_SCALES_OPSET)
    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(keep_fp32_ops))
    model = OnnxModel(converted)
    model.topological_sort()  # the converter appends its Cast nodes at the end of the node list
    sorted_proto: onnx.ModelProto = model.model  # onnxruntime is untyped
    return sorted_proto


def _with_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    current = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return model if current >= opset else onnx.version_converter.convert_version(model, opset)
