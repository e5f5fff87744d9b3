"""An ONNX model's intermediate tensors, read by running it with them as extra graph outputs, on ONNX Runtime's CPU
provider with the session options the ONNX backend runs artifacts with (graph optimizations on).

A tensor is exposed where the graph computes it, nothing is added in between: tests/test_layer_report.py checks
that the logits of the exposed graph are the artifact's own, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ..runtime.backends.onnxruntime_backend import session_options

BATCH = 64


def expose(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``tensors`` as graph outputs after its own (the logits stay first)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors) if t not in present)
    return exposed


class Runner:
    """``runner(inputs)`` -> {output name: values} of ``model`` over ``inputs`` [N, 3, H, W], in batches; the
    first output (the logits) under ``runner.logits_name``."""

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str] = ()):
        import onnxruntime as ort

        model = expose(model, outputs) if outputs else model
        self.session = ort.InferenceSession(model.SerializeToString(), session_options(),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]
        self.logits_name = self.names[0]

    def __call__(self, inputs: np.ndarray, batch: int = BATCH) -> dict[str, np.ndarray]:
        parts = [self.session.run(self.names, {self.input_name: inputs[i : i + batch]})
                 for i in range(0, len(inputs), batch)]
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.names)}

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        return self(inputs)[self.logits_name].astype(np.float32, copy=False)
