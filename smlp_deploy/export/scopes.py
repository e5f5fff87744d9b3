"""Which ONNX tensor or node is which PyTorch module's: read from the exporter's own record of module paths.

torch.onnx's exporter (torch.export, then onnxscript) writes on every node the module path it came from (the
``pkg.torch.onnx.name_scopes`` metadata: ``['', 'stages', 'stages.0', ..., fx node]``). onnxsim drops that
metadata, so an export's ``model.onnx`` and the artifacts made from it carry the tensors but not the paths. They
are matched by tensor name (the simplifier, the FP16 converter and the quantizer keep the names of the tensors
they do not remove) to a graph that still has the paths: the export's own graph before simplification
(:class:`ModulePaths`, which the export keeps to name the layers its accuracy budget changed), or the model
exported again (:func:`scoped_graph`, for the layer report). A module whose last tensor was folded away (a
convolution merged with the BatchNorm after it) has no output of its own in the artifact and is left out;
``diagnose.layers.layer_report`` also drops any match whose FP32 values are not the module's.
"""

from __future__ import annotations

import ast
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from torch import nn

from ..models.smlpnet import SMLPNet
from .onnx_graph import export_onnx

SCOPES_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class ModuleTensors:
    """For each module, in graph order: the tensor that is its output, and the activations its Conv/MatMul/Gemm
    nodes read (the tensors a Q/DQ form quantizes)."""

    outputs: dict[str, str]
    gemm_inputs: dict[str, list[str]]


def scoped_graph(model: SMLPNet) -> onnx.ModelProto:
    """``model`` exported as the export exports it, unsimplified, with the exporter's module paths on its nodes."""
    with tempfile.TemporaryDirectory(prefix="smlp-scopes-") as tmp:
        return export_onnx(model, Path(tmp) / "scoped.onnx")


def node_scope(node: onnx.NodeProto) -> list[str]:
    """The module paths a node was exported from, outermost first (the root module's ``''`` left out); the
    exporter writes them as a Python list of strings, the FX node's own name last."""
    text = next((entry.value for entry in node.metadata_props if entry.key == SCOPES_KEY), "[]")
    value = ast.literal_eval(text)
    return [str(p) for p in value[:-1] if p] if isinstance(value, list) else []


def module_tensors(scoped: onnx.ModelProto, modules: nn.Module, present: set[str]) -> ModuleTensors:
    """The output tensor of each module of ``modules`` (by its path) that ``scoped`` shows and ``present`` (the
    artifact's tensor names) holds: the first output of the last node exported from the module, where nodes
    outside it read that tensor or it is a graph output."""
    graph = scoped.graph
    constants = {i.name for i in graph.initializer}
    readers: dict[str, set[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, set()).add(index)
    graph_outputs = {o.name for o in graph.output}
    last: dict[str, int] = {}
    inputs: dict[str, list[str]] = {}
    scopes = [set(node_scope(node)) for node in graph.node]
    for index, (node, scope) in enumerate(zip(graph.node, scopes, strict=True)):
        for path in scope:
            last[path] = index
        if node.op_type in ("Conv", "MatMul", "Gemm") and scope:
            innermost = max(scope, key=len)
            inputs.setdefault(innermost, []).extend(t for t in node.input if t and t not in constants)
    outputs = {}
    known = {name for name, _ in modules.named_modules() if name}
    for path, index in sorted(last.items(), key=lambda item: item[1]):
        tensor = graph.node[index].output[0]
        leaves = tensor in graph_outputs or any(path not in scopes[r] for r in readers.get(tensor, ()))
        if path in known and leaves and tensor in present:
            outputs[path] = tensor
    return ModuleTensors(outputs, {p: ts for p, ts in inputs.items() if p in known})


@dataclass(frozen=True)
class ModulePaths:
    """Which PyTorch module each node of an export's graphs comes from, read from the exported graph before onnxsim
    drops the exporter's record: for every tensor, the op that made it, that op's first input, and the innermost
    module path it was exported from; and the module of each weight the exporter named by its parameter
    (``stages.0.blocks.0.channel_mix.fc1.weight``)."""

    producers: dict[str, tuple[str, str | None, str | None]]
    weights: dict[str, str]

    @classmethod
    def of(cls, scoped: onnx.ModelProto) -> ModulePaths:
        producers: dict[str, tuple[str, str | None, str | None]] = {}
        for node in scoped.graph.node:
            scope = node_scope(node)
            for tensor in node.output:
                producers[tensor] = (node.op_type, node.input[0] if node.input else None,
                                     max(scope, key=len) if scope else None)
        weights = {i.name: i.name.removesuffix(".weight") for i in scoped.graph.initializer
                   if i.name.endswith(".weight")}
        return cls(producers, weights)

    def module_of(self, node: onnx.NodeProto, steps: int = 4) -> str | None:
        """The module path of ``node`` of a graph made from the exported one (simplified, smoothed), found by the
        parameter its weight was exported from, else by its output tensor, whose name those steps keep. The
        exporter folds a BatchNorm into the Conv before it and gives the Conv the BatchNorm's module; by its weight
        it is the Conv's. Without a named weight, where onnxsim folded a node into an earlier one, the chain of first
        inputs is followed back, up to ``steps`` ops, to an op of ``node``'s type; None where none is found."""
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            named = [self.weights[name] for name in node.input if name in self.weights]
            if named:
                return named[0]
        tensor: str | None = node.output[0] if node.output else None
        for _ in range(steps):
            if tensor is None or tensor not in self.producers:
                return None
            op_type, tensor, module = self.producers[tensor]
            if op_type == node.op_type:
                return module
        return None
