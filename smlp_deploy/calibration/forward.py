"""The forward passes calibration observes: the float model with the observed tensors as extra outputs.

The tensors are added as graph outputs once, in one session, and each batch is one ``run``. ONNX Runtime's
CUDA provider runs it where onnxruntime-gpu finds a GPU (ONNX Runtime itself falls back to the CPU when the
provider cannot start); the statistics are taken on the host either way. That GPU path is the same session
with another provider list: no machine of this project has a GPU, so it has not been run here.

The graph runs without ONNX Runtime's graph optimizations, as its own calibrators run it, so every activation
is bit for bit the one they see, and it is not slower for it: with sMLPNet-T's Conv/MatMul/Gemm inputs as
outputs, the same forward at level "all" took 1.19x and 1.83x the unoptimized one's time over 256 images in the
two interleaved rounds of docs/benchmarks/calibration_speed.py (then with a "level all" task; 2 shared cores,
2026-11-25). Its layout rewrites (NCHWc convolutions) also change activations by up to 1.4e-6 of their scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..runtime.backends.onnxruntime_backend import available_providers, session_options

GPU_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


# ONNX Runtime's threads spin for a while after each run, on the cores the statistics of that run's tensors are then
# binned on (methods.compute_ranges, one thread a core), so they are told not to. With both, sMLPNet-T's percentile
# calibration of 256 images took 26.1 s against 31.6 s before, 1.75x FP32 inference against 2.30x, in the same
# rounds (docs/benchmarks/calibration-speed-tiny-cores.json); the statistics spread over two cores alone, ORT
# spinning, gained 0-10% (64 images, by hand).
ALLOW_SPINNING = "0"


class Activations:
    """``activations(batch)`` -> {tensor name: its values on ``batch``} for the named tensors of ``model_path``."""

    def __init__(self, model_path: str | Path, tensors: Sequence[str]):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(model_path))
        (graph_input,) = model.graph.input
        self.input_name = graph_input.name
        outputs = {o.name for o in model.graph.output}
        self.fetch = [t for t in tensors if t != self.input_name]  # the input is the batch itself
        self.observe_input = len(self.fetch) < len(tensors)
        model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in self.fetch if t not in outputs)
        serialized = model.SerializeToString()
        del model  # the weights are held three times until the session owns them: keep the peak short
        options = session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", ALLOW_SPINNING)
        providers = GPU_PROVIDERS if GPU_PROVIDERS[0] in available_providers() else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(serialized, options, providers=providers)
        self.provider = self.session.get_providers()[0]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = {}
        if self.fetch:  # ONNX Runtime reads an empty list of outputs as "all of them": the model's logits
            values = dict(zip(self.fetch, self.session.run(self.fetch, {self.input_name: batch}), strict=True))
        if self.observe_input:
            values[self.input_name] = batch
        return values
