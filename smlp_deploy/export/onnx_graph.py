"""PyTorch -> ONNX (torch.export-based exporter) and onnxsim simplification."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from ..artifacts import INPUT_NAME, OUTPUT_NAME
from ..errors import SmlpDeployError
from ..fileio import atomic_path
from ..models.smlpnet import SMLPNet

# Opset 20 has Gelu: one node per activation, which ONNX Runtime fuses with the preceding bias Add (BiasGelu)
# and TensorRT >= 10.0 imports as one activation layer. Below 20 the exporter writes x * 0.5 * (1 + erf(x/sqrt2))
# as five nodes that ONNX Runtime leaves unfused. TensorRT 10.0 parses opsets up to 20.
DEFAULT_OPSET = 20
MIN_OPSET = 17  # LayerNormalization stays one node
MAX_BATCH = 4096  # upper bound given to torch.export for the symbolic batch dimension


def export_onnx(model: SMLPNet, path: str | Path, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export ``model`` with input ``input`` [N,3,H,W] float32, output ``logits`` [N,classes], dynamic N.

    The file is checked (``onnx.checker`` with full shape inference) before it is put in place.
    """
    if opset < MIN_OPSET:
        raise SmlpDeployError(f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}",
                              parameter="opset")
    size = model.image_size
    example = (torch.zeros(2, 3, size, size),)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), example, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, external_data=False, verbose=False,
        )
    assert program is not None, "torch.onnx.export returns None only with dynamo=False"
    proto = program.model_proto
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    check_model(proto)
    save_model(proto, path)
    return proto


class _quiet_exporter:
    """The exporter reports its progress and missing optional ops (torchvision's) through logging; keep the
    console for our own progress. Errors still surface as exceptions."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def check_model(proto: onnx.ModelProto) -> None:
    onnx.checker.check_model(proto, full_check=True)


def save_model(proto: onnx.ModelProto, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


@dataclass
class SimplifyResult:
    model: onnx.ModelProto
    simplified: bool
    nodes_before: int
    nodes_after: int
    note: str


def op_counts(proto: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in proto.graph.node)


def simplify(proto: onnx.ModelProto) -> SimplifyResult:
    """Run onnxsim, keeping its result only if it is no larger than the input.

    onnxsim's MatMul+Add -> Gemm fusion wraps each 4-D channel-MLP matmul in two Reshapes, which grows this
    graph; when that happens it is run again with constant folding and shape inference only. If onnxsim
    fails, the input graph is kept and the note says why.
    """
    before = len(proto.graph.node)
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        note = ""
        if ok and len(simplified.graph.node) > before:
            note = f" (full optimization grew it to {len(simplified.graph.node)}; folded constants only)"
            simplified, ok = onnxsim.simplify(proto, perform_optimization=False)
    except Exception as exc:  # onnxsim raises assorted C++ errors; any of them means "keep the original"
        return SimplifyResult(proto, False, before, before, f"onnxsim failed, graph kept unsimplified: {exc}")
    after = len(simplified.graph.node)
    if not ok or after > before:
        why = "its own check failed" if not ok else f"it grew the graph to {after} nodes"
        return SimplifyResult(proto, False, before, before, f"onnxsim result discarded: {why}")
    check_model(simplified)
    return SimplifyResult(simplified, True, before, after, f"{before} -> {after} nodes{note}")
