"""An accuracy budget for a reduced-precision model, and the held-out images it is judged on.

Two budgets, as a user states them: at most so many points of top-1 lost against FP32 on labeled images, or at
least so much top-1 agreement with FP32 on unlabeled images held out from calibration. Both are counted in
images (a 0.5 point budget on 450 images allows 2 images), so a float rounding never decides a verdict. A
candidate model meets the budget only if it also passes the export's parity gate (``Gate``): an artifact that
keeps its top-1 but is refused by the gate would not be written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import Arg, InputError
from .tensors import Runner

METRICS = ("top1-drop", "agreement")
RANKINGS = ("error-added", "one-at-a-time")
DEFAULT_IMAGES = 1000  # at most this many images judge a budget: 600 MB preprocessed at 224 px
FLOAT_SHARE = 0.1  # by default at most this share of the quantized layers may be kept in float


@dataclass(frozen=True)
class AccuracyBudget:
    """What a reduced-precision export must keep, with the data it is judged on.

    Exactly one of ``max_top1_drop`` (points of top-1 below FP32's on the export's labeled ``eval_dir``) and
    ``min_agreement`` (percent of held-out images whose top-1 is FP32's) is set. Agreement is judged on
    ``holdout_dir`` (unlabeled images, searched recursively), by default on the calibration folder's images that
    calibration did not draw; images that are also calibration images are left out. At most ``images`` are drawn
    from either folder (seeded by the calibration seed). ``max_float_layers`` bounds float fallback (default: a
    tenth of the form's quantized layers, rounded up; 0 turns it off); ``ranking`` is how fallback ranks layers
    (``calibration.fallback``).
    """

    max_top1_drop: float | None = None
    min_agreement: float | None = None
    holdout_dir: Path | None = None
    images: int = DEFAULT_IMAGES
    max_float_layers: int | None = None
    ranking: str = "error-added"

    def __post_init__(self) -> None:
        if (self.max_top1_drop is None) == (self.min_agreement is None):
            raise InputError("an accuracy budget is either a maximum top-1 drop or a minimum top-1 agreement: give ",
                             Arg("max_top1_drop", 0.5), " or ", Arg("min_agreement", 99.5), ", not both",
                             parameter="max_top1_drop")
        if not 0 <= self.points <= 100:
            raise InputError(f"the budget is in points between 0 and 100, got {self.points:g}",
                             parameter=self.parameter)
        if self.holdout_dir is not None and self.metric == "top1-drop":
            raise InputError("held-out images are for an agreement budget; a top-1 drop is judged on the labeled "
                             "folder of ", Arg("eval_dir", "DIR"), parameter="holdout_dir")
        if self.images < 1:
            raise InputError(f"a budget is judged on at least 1 image, got {self.images}", parameter="images")
        if self.max_float_layers is not None and self.max_float_layers < 0:
            raise InputError(f"the number of layers kept in float cannot be negative, got {self.max_float_layers}",
                             parameter="max_float_layers")
        if self.ranking not in RANKINGS:
            raise InputError(f"float fallback ranks layers by {' or '.join(RANKINGS)}, not {self.ranking!r}",
                             parameter="ranking")

    @property
    def metric(self) -> str:
        return "top1-drop" if self.max_top1_drop is not None else "agreement"

    @property
    def parameter(self) -> str:
        """The parameter that states the budget, which its errors name."""
        return "max_top1_drop" if self.max_top1_drop is not None else "min_agreement"

    @property
    def points(self) -> float:
        value = self.max_top1_drop if self.max_top1_drop is not None else self.min_agreement
        assert value is not None  # __post_init__: exactly one is set
        return value

    def float_layers_allowed(self, quantized: int) -> int:
        """How many of ``quantized`` layers float fallback may keep in float."""
        return self.max_float_layers if self.max_float_layers is not None else math.ceil(FLOAT_SHARE * quantized)

    def describe(self) -> str:
        return (f"at most {self.points:g} points of top-1 below FP32" if self.metric == "top1-drop"
                else f"at least {self.points:g}% top-1 agreement with FP32")


@dataclass(frozen=True)
class Evaluation:
    """A candidate model on the held-out images: the budget's metric in percent (top-1, or agreement with FP32),
    the images it gets right and the number it needs, the logits' mean relative error against FP32 (a continuous
    measure, for ranking), and what misses the parity gate (empty: it passes, or there is no gate)."""

    value: float
    hits: int
    needed: int
    logit_error: float
    gate: tuple[str, ...] = ()

    @property
    def meets(self) -> bool:
        return self.hits >= self.needed and not self.gate


@dataclass(frozen=True)
class Gate:
    """The parity gate a candidate must pass as well: its logits on ``inputs`` -> what misses (empty: passes)."""

    inputs: np.ndarray
    failures: Callable[[np.ndarray], list[str]]


@dataclass
class HeldOut:
    """Preprocessed images [N, 3, H, W], their labels (None: unlabeled), FP32's logits on them, and the parity
    gate candidates are held to."""

    inputs: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray
    gate: Gate | None = None

    def check(self, budget: AccuracyBudget) -> None:
        if budget.metric == "top1-drop" and self.labels is None:
            raise InputError("a top-1 drop budget needs labeled images: give a labeled folder, or budget top-1 "
                             "agreement with FP32 on unlabeled images instead", parameter="max_top1_drop")

    def reference_value(self, budget: AccuracyBudget) -> float:
        """FP32's own value of the budget's metric, in percent."""
        return 100.0 * self._hits(self.reference, budget) / len(self.inputs)

    def measure(self, model: onnx.ModelProto, budget: AccuracyBudget) -> Evaluation:
        """``model`` run on ONNX Runtime over the held-out images and the gate's inputs, in one session."""
        gate = self.gate
        inputs = self.inputs if gate is None else np.concatenate([self.inputs, gate.inputs])
        logits = Runner(model).logits(inputs)
        evaluation = self.evaluate(logits[: len(self.inputs)], budget)
        if gate is None:
            return evaluation
        return Evaluation(evaluation.value, evaluation.hits, evaluation.needed, evaluation.logit_error,
                          tuple(gate.failures(logits[len(self.inputs) :])))

    def evaluate(self, logits: np.ndarray, budget: AccuracyBudget) -> Evaluation:
        n = len(self.inputs)
        if budget.metric == "top1-drop":
            needed = self._hits(self.reference, budget) - math.floor(budget.points * n / 100 + 1e-9)
        else:
            needed = math.ceil(budget.points * n / 100 - 1e-9)
        hits = self._hits(logits, budget)
        error = np.linalg.norm(logits - self.reference, axis=1) / np.maximum(
            np.linalg.norm(self.reference, axis=1), 1e-30)
        return Evaluation(100.0 * hits / n, hits, needed, float(error.mean()))

    def _hits(self, logits: np.ndarray, budget: AccuracyBudget) -> int:
        truth = self.labels if budget.metric == "top1-drop" else self.reference.argmax(1)
        return int(np.sum(logits.argmax(1) == truth))
