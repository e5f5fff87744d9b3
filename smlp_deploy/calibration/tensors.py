"""An ONNX model's intermediate tensors, read by running it with them as extra graph outputs, on ONNX Runtime's CPU
provider with the session options the ONNX backend runs artifacts with (graph optimizations on, unless
``optimized=False``: exposing tensors blocks fusions, so only an unoptimized run keeps the logits of an exposed
graph bit for bit; tests/test_layer_report.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ..runtime.backends.onnxruntime_backend import session_options

BATCH = 64
EXPOSED = ".exposed"


def expose(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs after its own (the logits stay first) are ``tensors``, each read through a
    Cast to float32 named ``<tensor>`` + ``EXPOSED``: the tensor itself stays internal, so ONNX Runtime treats it
    as in the graph as given (an fp16 tensor made a graph output would have to be materialized in fp16, where the
    CPU provider otherwise keeps fp32 between its cast-wrapped fp16 nodes)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for tensor in dict.fromkeys(tensors):
        exposed.graph.node.append(onnx.helper.make_node("Cast", [tensor], [tensor + EXPOSED], to=TensorProto.FLOAT,
                                                        name=tensor + EXPOSED))
        exposed.graph.output.append(onnx.ValueInfoProto(name=tensor + EXPOSED))
    return exposed


class Runner:
    """``runner(inputs)`` -> {output name: values} of ``model`` over ``inputs`` [N, 3, H, W], in batches; the
    first output (the logits) under ``runner.logits_name``."""

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str] = (), *, optimized: bool = True):
        import onnxruntime as ort

        model = expose(model, outputs) if outputs else model
        options = session_options()
        if not optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]
        self.logits_name = self.names[0]

    def __call__(self, inputs: np.ndarray, batch: int = BATCH) -> dict[str, np.ndarray]:
        parts = [self.session.run(self.names, {self.input_name: inputs[i : i + batch]})
                 for i in range(0, len(inputs), batch)]
        return {name.removesuffix(EXPOSED): np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.names)}

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return self(inputs)[self.logits_name].astype(np.float32, copy=False)
