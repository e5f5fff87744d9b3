"""An accuracy budget for a reduced-precision model, and the held-out images it is judged on.

Two budgets, as a user states them: at most so many points of top-1 lost against FP32 on labeled images, or at
least so much top-1 agreement with FP32 on unlabeled images held out from calibration. Both are counted in
images (a 0.5 point budget on 450 images allows 2 images), so a float rounding never decides a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

METRICS = ("top1-drop", "agreement")


@dataclass(frozen=True)
class Budget:
    """``top1-drop``: at most ``points`` of top-1 (in percentage points) below FP32's, on labeled images;
    ``agreement``: at least ``points`` percent of images whose top-1 is FP32's."""

    metric: str
    points: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"an accuracy budget is one of {', '.join(METRICS)}, got {self.metric!r}",
                             parameter="budget")
        if not 0 <= self.points <= 100:
            raise InputError(f"the {self.metric} budget is in points between 0 and 100, got {self.points}",
                             parameter="budget")

    def describe(self) -> str:
        return (f"at most {self.points:g} points of top-1 below FP32" if self.metric == "top1-drop"
                else f"at least {self.points:g}% top-1 agreement with FP32")


@dataclass(frozen=True)
class Evaluation:
    """A candidate model on the held-out images: the budget's metric in percent (top-1, or agreement with FP32),
    the images it needs for the budget, and the logits' mean relative error against FP32 (a continuous measure,
    for ranking)."""

    value: float
    hits: int
    needed: int
    logit_error: float

    @property
    def meets(self) -> bool:
        return self.hits >= self.needed


@dataclass
class HeldOut:
    """Preprocessed images [N, 3, H, W], their labels (None: unlabeled) and FP32's logits on them."""

    inputs: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray

    def check(self, budget: Budget) -> None:
        if budget.metric == "top1-drop" and self.labels is None:
            raise InputError("a top-1 drop budget needs labeled images: give a labeled folder, or budget top-1 "
                             "agreement with FP32 on unlabeled images instead", parameter="budget")

    def reference_value(self, budget: Budget) -> float:
        """FP32's own value of the budget's metric, in percent."""
        return 100.0 * self._hits(self.reference, budget) / len(self.inputs)

    def evaluate(self, logits: np.ndarray, budget: Budget) -> Evaluation:
        n = len(self.inputs)
        if budget.metric == "top1-drop":
            needed = self._hits(self.reference, budget) - math.floor(budget.points * n / 100 + 1e-9)
        else:
            needed = math.ceil(budget.points * n / 100 - 1e-9)
        hits = self._hits(logits, budget)
        error = np.linalg.norm(logits - self.reference, axis=1) / np.maximum(
            np.linalg.norm(self.reference, axis=1), 1e-30)
        return Evaluation(100.0 * hits / n, hits, needed, float(error.mean()))

    def _hits(self, logits: np.ndarray, budget: Budget) -> int:
        truth = self.labels if budget.metric == "top1-drop" else self.reference.argmax(1)
        return int(np.sum(logits.argmax(1) == truth))
