"""What manifest.json records of an export made within an accuracy budget (``smlp-export --max-top1-drop`` or
``--min-agreement``): the budget, the images it was judged on, what each remedy did, and the metric before and
after each, per artifact. Layers are named by their PyTorch module path, with the ONNX node beside it."""

from __future__ import annotations

from dataclasses import dataclass, field

REMEDY_WORDS = {"none": "as quantized", "smoothing": "smoothed", "fallback": "with float fallback"}


def describe_steps(steps: list[BudgetStep]) -> str:
    """``as quantized 91.78% -> smoothed 99.33%``: the budget's metric after each remedy, as the export says it."""
    return " -> ".join(f"{REMEDY_WORDS[s.remedy]} {s.value:.2f}%" for s in steps)


def describe_smoothed(layers: list[SmoothedLayer]) -> str:
    """``stages.0.blocks.0.channel_mix.fc1 (alpha 1), ...``: each smoothed layer and its strength."""
    return ", ".join(f"{s.module or s.node} (alpha {s.alpha:g})" for s in layers)


@dataclass(frozen=True)
class SmoothedLayer:
    """A linear layer whose input's per-channel scale smoothing moved into its weight."""

    module: str | None  # PyTorch module path; None where the exporter's record does not name it
    node: str  # the ONNX node in model.onnx
    alpha: float  # SmoothQuant's migration strength, chosen on the calibration images
    spread_before: float  # largest over median channel maximum of the layer's input, before and after
    spread_after: float


@dataclass(frozen=True)
class FloatLayer:
    """A layer float fallback kept out of the reduced precision."""

    module: str | None
    node: str


@dataclass(frozen=True)
class BudgetStep:
    """The budget's metric after one remedy (``none``: quantized as is; ``smoothing``; ``fallback``)."""

    remedy: str
    value: float  # percent: top-1, or top-1 agreement with FP32
    images_right: int
    images_needed: int
    logit_error: float  # mean relative error of the logits against FP32's
    meets: bool  # the budget, and the parity gate
    gate: list[str] = field(default_factory=list)  # what missed the parity gate; empty: it passed


@dataclass(frozen=True)
class BudgetOutcome:
    """One artifact made within the budget."""

    artifact: str
    steps: list[BudgetStep]  # in the order the remedies ran: none, smoothing (where it changed the graph), fallback
    float_layers: list[FloatLayer]
    ranking: str | None = None  # how fallback ranked the layers, where it ran
    evaluations: int = 0  # candidate models quantized and run by fallback
    seconds: float = 0.0  # of fallback's search


@dataclass
class BudgetRecord:
    metric: str  # top1-drop | agreement
    points: float
    data: str  # the folder the budget was judged on
    images: int
    calibration_images_left_out: int  # held-out images that were calibration images too
    reference: float  # FP32's value of the metric, percent
    max_float_layers: int | None  # as asked; None: a tenth of each form's quantized layers
    smoothing: list[SmoothedLayer] = field(default_factory=list)
    smoothing_seconds: float = 0.0
    outcomes: list[BudgetOutcome] = field(default_factory=list)
