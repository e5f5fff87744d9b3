"""Float fallback: the fewest quantized layers to keep in float for a quantized model to meet an accuracy budget.

The layers are the Conv/MatMul/Gemm nodes the quantizer gives Q/DQ; a layer kept in float has none (it runs in
the float parts' precision: fp16 in the TensorRT form with fp16 parts, fp32 in the CPU form). The search:

1. the fully quantized model is evaluated; if it meets the budget, nothing is kept in float;
2. the layers are ranked, most harmful first, by one of two rankings:
   ``one-at-a-time``: each layer alone in float, the logits' error against FP32 on the held-out images (one
   evaluation a layer); ``error-added``: one run of the FP32 and the fully quantized model with every layer's
   input and output exposed, each layer scored by the relative error its output has beyond its inputs' (no
   evaluation of a candidate; validated against one-at-a-time in docs/benchmarks/int8_accuracy_control.py);
3. the shortest prefix of the ranking that meets the budget is found by doubling, then bisection, among the
   prefixes the budget allows (``AccuracyBudget.max_float_layers``);
4. each layer of that prefix, least harmful first, is put back into INT8 where the budget still holds.

Every candidate is quantized as it would be written (``quantize(keep_float)``) and run on ONNX Runtime; each
distinct set is evaluated once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from .budget import AccuracyBudget, Evaluation, HeldOut
from .quantize import QUANTIZED_OPS
from .tensors import Runner

PROXY_IMAGES = 64  # images the error-added ranking runs


@dataclass(frozen=True)
class Sensitivity:
    """How much one layer costs in INT8: the logits' error with it alone in float (one-at-a-time: lower is more
    harmful), or the relative error it adds (error-added: higher is more harmful)."""

    layer: str
    score: float


@dataclass(frozen=True)
class FallbackResult:
    budget: AccuracyBudget
    before: Evaluation  # every layer quantized
    after: Evaluation  # with ``keep_float`` in float
    keep_float: list[str]  # where the budget is missed: the most the budget allows, the most harmful first
    ranking: str
    ranked: list[Sensitivity]  # most harmful first
    evaluations: int  # candidate models quantized and run, the fully quantized one included
    seconds: float

    @property
    def met(self) -> bool:
        return self.after.meets


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """The nodes that float fallback can keep in float: every Conv, MatMul and Gemm, in graph order."""
    return [node.name for node in model.graph.node if node.op_type in QUANTIZED_OPS]


class _Candidates:
    """Evaluates sets of float layers, each once; keeps the model with none in float (the error-added ranking
    runs it)."""

    def __init__(self, quantize: Callable[[frozenset[str]], onnx.ModelProto], held_out: HeldOut,
                 budget: AccuracyBudget, first: tuple[onnx.ModelProto, Evaluation] | None):
        self.quantize, self.held_out, self.budget = quantize, held_out, budget
        self.seen: dict[frozenset[str], Evaluation] = {}
        self.none_in_float: onnx.ModelProto | None = None
        if first is not None:
            self.none_in_float, self.seen[frozenset()] = first

    def __call__(self, layers: Collection[str]) -> Evaluation:
        key = frozenset(layers)
        if key not in self.seen:
            model = self.quantize(key)
            if not key:
                self.none_in_float = model
            self.seen[key] = self.held_out.measure(model, self.budget)
        return self.seen[key]


def search_fallback(float_model: onnx.ModelProto, quantize: Callable[[frozenset[str]], onnx.ModelProto],
                    held_out: HeldOut, budget: AccuracyBudget, *, layers: Sequence[str] | None = None,
                    first: tuple[onnx.ModelProto, Evaluation] | None = None) -> FallbackResult:
    """The fewest of ``layers`` (default: every quantized layer of ``float_model``) to keep in float so that
    ``quantize(keep_float)`` meets ``budget`` on ``held_out``, ranked by ``budget.ranking``; ``result.met`` is
    False where even the most layers the budget allows in float miss it (then ``keep_float`` is those).
    ``first``: ``quantize(())`` and its evaluation, where the caller has them (not quantized again)."""
    held_out.check(budget)
    ranking = budget.ranking
    start = time.perf_counter()
    layers = list(layers if layers is not None else quantized_layers(float_model))
    allowed = budget.float_layers_allowed(len(layers))
    evaluate = _Candidates(quantize, held_out, budget, first)
    before = evaluate(())
    ranked: list[Sensitivity] = []
    chosen: list[str] = []
    if not before.meets and allowed:
        assert evaluate.none_in_float is not None  # evaluate(()) above
        ranked = (_one_at_a_time(layers, evaluate) if ranking == "one-at-a-time"
                  else _error_added(float_model, evaluate.none_in_float, layers, held_out.inputs[:PROXY_IMAGES]))
        chosen = _shortest_prefix([s.layer for s in ranked][:allowed], evaluate)
        chosen = _put_back(chosen, evaluate)
    return FallbackResult(budget, before, evaluate(chosen), chosen, ranking, ranked,
                          len(evaluate.seen), time.perf_counter() - start)


def _one_at_a_time(layers: Sequence[str], evaluate: _Candidates) -> list[Sensitivity]:
    scored = [Sensitivity(layer, evaluate([layer]).logit_error) for layer in layers]
    return sorted(scored, key=lambda s: s.score)


def _error_added(float_model: onnx.ModelProto, quantized: onnx.ModelProto, layers: Sequence[str],
                 inputs: np.ndarray) -> list[Sensitivity]:
    """Each layer's output error against FP32 less the largest error among its activation inputs, from one run of
    each model with those tensors exposed."""
    constants = {i.name for i in float_model.graph.initializer}
    nodes = {n.name: n for n in float_model.graph.node}
    ends = {layer: ([t for t in nodes[layer].input if t and t not in constants], nodes[layer].output[0])
            for layer in layers}
    tensors = [t for ins, out in ends.values() for t in (*ins, out) if t != float_model.graph.input[0].name]
    exact, approximate = Runner(float_model, tensors)(inputs), Runner(quantized, tensors)(inputs)

    def error(name: str) -> float:
        if name not in exact:  # the graph's input
            return 0.0
        a, b = exact[name].astype(np.float64), approximate[name].astype(np.float64)
        return float(np.linalg.norm(b - a) / max(float(np.linalg.norm(a)), 1e-30))

    scored = [Sensitivity(layer, error(out) - max((error(t) for t in ins), default=0.0))
              for layer, (ins, out) in ends.items()]
    return sorted(scored, key=lambda s: -s.score)


def _shortest_prefix(order: Sequence[str], evaluate: _Candidates) -> list[str]:
    """The shortest ``order[:m]`` that meets the budget, by doubling m then bisecting (the metric is taken to grow
    with m); all of ``order`` where none does."""
    failing, meeting, m = 0, None, 1
    while meeting is None and m < len(order):
        if evaluate(order[:m]).meets:
            meeting = m
        else:
            failing, m = m, 2 * m
    if meeting is None:
        meeting = len(order)
        if not evaluate(order).meets:
            return list(order)
    while meeting - failing > 1:
        middle = (failing + meeting) // 2
        if evaluate(order[:middle]).meets:
            meeting = middle
        else:
            failing = middle
    return list(order[:meeting])


def _put_back(chosen: list[str], evaluate: _Candidates) -> list[str]:
    """Each chosen layer, least harmful first, back into INT8 where the budget still holds without it."""
    if not evaluate(chosen).meets:
        return chosen
    kept = list(chosen)
    for layer in reversed(chosen):
        trial = [other for other in kept if other != layer]
        if evaluate(trial).meets:
            kept = trial
    return kept
