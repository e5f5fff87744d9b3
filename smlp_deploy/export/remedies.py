"""An export within an accuracy budget: its INT8 and FP8 forms are made to meet the budget the user states, with
the least float, or the export fails saying what each remedy reached.

For each calibrated precision, in this order:

1. smoothing (``calibration.smoothing``, SmoothQuant's idea) of model.onnx on the calibration images, at every
   linear layer where it halves the error of the layer's quantized product; a model without activation outliers
   is left as it was (the digits model: nothing smoothed, so its artifacts are those of an export without a
   budget). Every form of the precision is calibrated on the smoothed copy (the calibration cache's key is its
   hash) and quantized from it; model.onnx stays the FP32 artifact, verified as FP32.
2. each form is quantized as it will be written (fp16 float parts included) and judged on the held-out images: the
   budget's metric, and the export's parity gate on the verification photos (a form the gate would refuse does
   not meet the budget);
3. a form that still misses gets float fallback (``calibration.fallback``): the fewest layers kept in float, at
   most ``AccuracyBudget.max_float_layers``.

Where smoothing changed the graph, each form is also quantized from model.onnx, calibrated again (uncached), so
that the manifest holds the metric before any remedy. Smoothing before fallback: on the outlier fixture smoothing
alone met a 0.5 point budget in every case measured, and fallback alone left worst logit cosines of 0.85-0.92
(docs/accuracy.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import ArtifactKind
from ..budget_record import (
    REMEDY_WORDS,
    BudgetOutcome,
    BudgetRecord,
    BudgetStep,
    FloatLayer,
    SmoothedLayer,
    describe_smoothed,
    describe_steps,
)
from ..calibration.budget import AccuracyBudget, Evaluation, Gate, HeldOut
from ..calibration.fallback import FallbackResult, search_fallback
from ..calibration.fp8 import METHODS as FP8_METHODS
from ..calibration.methods import METHODS, Ranges, compute_ranges, get_method
from ..calibration.options import CalibrationOptions
from ..calibration.smoothing import channel_maxima, smooth, smoothing_sites
from ..calibration.tensors import Runner
from ..errors import AccuracyError, Arg, ImageError, InputError
from ..evaluation import class_indices
from ..fileio import sha256_file
from ..imagefolder import LabeledFolder, find_images, holds_no_images, not_a_folder
from ..runtime.preprocess import Preprocessor
from .job import FP32, ExportJob
from .onnx_graph import save_model
from .parity import THRESHOLDS, compare

SMOOTHED_NAME = "model.smoothed.onnx"  # the smoothed float model, in the staging folder while the export runs


@dataclass(frozen=True)
class Form:
    """One reduced-precision artifact the budget applies to: how it is quantized from a float model (with some
    layers kept in float) and which layers of a float model it quantizes."""

    kind: ArtifactKind
    options: CalibrationOptions
    quantize: Callable[[Path, Ranges, Collection[str]], onnx.ModelProto]
    layers: Callable[[onnx.ModelProto], list[str]]


def check_budget(budget: AccuracyBudget, precisions: Sequence[str], eval_folder: LabeledFolder | None) -> None:
    """Refuse, before any work, a budget with nothing to apply to or no data to be judged on."""
    parameter = budget.parameter
    if not {"int8", "fp8"} & set(precisions):
        raise InputError("an accuracy budget applies to INT8 and FP8: export int8 or fp8 too", parameter=parameter)
    if budget.metric == "top1-drop" and eval_folder is None:
        raise InputError("a top-1 drop is judged on a labeled folder: pass ", Arg("eval_dir", "DIR"),
                         parameter=parameter)
    if budget.holdout_dir is not None and (problem := not_a_folder(Path(budget.holdout_dir))):
        raise InputError(f"held-out folder {str(budget.holdout_dir)!r} {problem}", parameter="holdout_dir")


class BudgetedQuantization:
    """The steps of an export that make its calibrated forms within ``budget``, and what they found, for the
    manifest. ``forms`` are grouped by precision, each group sharing its calibration."""

    def __init__(self, job: ExportJob, budget: AccuracyBudget, forms: Sequence[Form],
                 eval_folder: LabeledFolder | None):
        self.job, self.budget, self.forms, self.eval_folder = job, budget, forms, eval_folder
        self.inputs = np.zeros((0,), np.float32)
        self.labels: np.ndarray | None = None
        self.reference = np.zeros((0,), np.float32)
        self.data, self.left_out = "", 0
        self.source = FP32.file_name  # the float model the forms are calibrated on and quantized from
        self.smoothed: list[SmoothedLayer] = []
        self.smoothing_seconds = 0.0
        self.before: dict[str, Evaluation] = {}  # artifact -> the metric before smoothing, where smoothing ran
        self.outcomes: list[BudgetOutcome] = []

    # Steps.

    def read_held_out(self) -> None:
        """The images the budget is judged on, preprocessed: the labeled folder (top-1 drop), or unlabeled images
        that are not calibration images (agreement). Run before anything is written."""
        preprocess = Preprocessor(self.job.manifest.preprocess)
        rng = np.random.default_rng(self.forms[0].options.seed)
        if self.budget.metric == "top1-drop":
            folder = self.eval_folder
            assert folder is not None  # check_budget
            samples = [folder.samples[i] for i in sorted(_order(len(folder.samples), rng)[: self.budget.images])]
            info = self.job.manifest
            indices = class_indices(folder.classes, info.labels, info.model.num_classes, sortable=False)
            self.inputs = np.stack([preprocess(path, name=str(path)) for path, _ in samples])
            self.labels = np.array([indices[name] for _, name in samples])
            self.data = str(folder.root)
        else:
            self._read_unlabeled(preprocess, rng)
        self.job.say(f"{len(self.inputs)} images" + (f", {self.left_out} calibration images left out"
                                                      if self.left_out else ""))

    def _read_unlabeled(self, preprocess: Preprocessor, rng: np.random.Generator) -> None:
        calibration = list(self.job.calib.values())
        root = Path(self.budget.holdout_dir or calibration[0].root)
        taken = {digest for images in calibration for digest in images.digests}
        candidates = find_images(root)
        images: list[np.ndarray] = []
        for index in _order(len(candidates), rng):
            if len(images) == self.budget.images:
                break
            path = candidates[index]
            if sha256_file(path) in taken:
                self.left_out += 1
                continue
            try:
                images.append(preprocess(path, name=str(path)))
            except ImageError:
                continue
        if not images:
            what = f"{holds_no_images(root)} that are not calibration images" if candidates else holds_no_images(root)
            raise InputError(f"{what}: an agreement budget is judged on images held out from calibration; pass ",
                             Arg("holdout_dir", "DIR"), parameter="holdout_dir")
        self.inputs, self.data = np.stack(images), str(root)

    def smooth(self) -> None:
        """Smooth model.onnx where it helps; where that changed it, measure each form without it too."""
        start = time.perf_counter()
        fp32 = self.job.out / FP32.file_name
        proto = onnx.load(str(fp32))
        self.reference = Runner(proto).logits(self.inputs)
        calibration = next(iter(self.job.calib.values()))
        sites = smoothing_sites(proto)
        maxima, samples = channel_maxima(str(fp32), calibration, sites)
        smoothed, records = smooth(proto, maxima, samples, sites)
        nodes = {node.name: node for node in proto.graph.node}
        paths = self.job.module_paths
        self.smoothed = [SmoothedLayer(paths.module_of(nodes[r.linear]) if paths else None, r.linear, r.alpha,
                                       round(r.spread_before, 2), round(r.spread_after, 2))
                         for r in records if r.alpha is not None]
        self.smoothing_seconds = round(time.perf_counter() - start, 2)
        if not self.smoothed:
            self.job.say(f"no activation outliers: nothing smoothed ({len(sites)} places it applies)")
            return
        save_model(smoothed, self.job.out / SMOOTHED_NAME)
        self.source = SMOOTHED_NAME
        self.job.say(f"smoothed {len(self.smoothed)} of {len(sites)} layers: {describe_smoothed(self.smoothed)}")
        for options in dict.fromkeys(form.options for form in self.forms):
            ranges = compute_ranges(fp32, self.job.calib[_calib_key(options)], get_method(options.method),
                                    options.tensors(proto), quiet=True)
            for form in (f for f in self.forms if f.options == options):
                self.before[form.kind.file_name] = self._held_out(form).measure(form.quantize(fp32, ranges, ()),
                                                                                 self.budget)
        self.job.say("before smoothing: " + ", ".join(f"{name} {e.value:.2f}%" for name, e in self.before.items()))

    def calibrate(self, options: CalibrationOptions) -> None:
        self.job.calibrate(options, model=self.source)

    def quantize(self, form: Form) -> None:
        """Quantize ``form`` from the (smoothed) float model; where it misses the budget, keep the fewest layers in
        float that meet it; write it, or fail with what was reached."""
        source = self.job.out / self.source
        ranges = self.job.ranges[form.kind.precision]
        held_out = self._held_out(form)
        model = form.quantize(source, ranges, ())
        first = held_out.measure(model, self.budget)
        name = form.kind.file_name
        steps = ([_step("none", self.before[name]), _step("smoothing", first)] if name in self.before
                 else [_step("none", first)])
        keep: list[str] = []
        fallback: FallbackResult | None = None
        float_model = onnx.load(str(source))
        if not first.meets:
            fallback = search_fallback(float_model, lambda kept: form.quantize(source, ranges, kept), held_out,
                                       self.budget, layers=form.layers(float_model), first=(model, first))
            steps.append(_step("fallback", fallback.after))
            if not fallback.met:
                raise self._missed(form, steps, fallback)
            keep = fallback.keep_float
            model = form.quantize(source, ranges, keep)
        save_model(model, self.job.out / name)
        nodes = {node.name: node for node in float_model.graph.node}
        paths = self.job.module_paths
        self.outcomes.append(BudgetOutcome(
            name, steps, [FloatLayer(paths.module_of(nodes[n]) if paths else None, n) for n in keep],
            ranking=fallback.ranking if fallback else None, evaluations=fallback.evaluations if fallback else 0,
            seconds=round(fallback.seconds, 2) if fallback else 0.0))
        self.job.say(describe_steps(steps)
                     + f" (FP32 {self._reference_value():.2f}%): meets the budget"
                     + (f" with {len(keep)} layer(s) in float" if keep else ""))

    def record(self) -> None:
        """The budget and what its remedies did, into the manifest; the smoothed copy is not part of the export."""
        self.job.manifest.accuracy_budget = BudgetRecord(
            self.budget.metric, self.budget.points, self.data, len(self.inputs), self.left_out,
            round(self._reference_value(), 4), self.budget.max_float_layers, self.smoothed, self.smoothing_seconds,
            self.outcomes)
        (self.job.out / SMOOTHED_NAME).unlink(missing_ok=True)

    # Helpers.

    def _held_out(self, form: Form) -> HeldOut:
        precision = form.kind.precision
        photos, reference = self.job.verification.for_precision(precision)
        names = self.job.verification.names(precision)

        def failures(logits: np.ndarray) -> list[str]:
            return THRESHOLDS[precision].failures(compare(reference, logits, artifact=form.kind.file_name,
                                                          names=names))

        return HeldOut(self.inputs, self.labels, self.reference, Gate(photos, failures))

    def _reference_value(self) -> float:
        return HeldOut(self.inputs, self.labels, self.reference).reference_value(self.budget)

    def _missed(self, form: Form, steps: list[BudgetStep], fallback: FallbackResult) -> AccuracyError:
        budget, name = self.budget, form.kind.file_name
        reached = "; ".join(f"{REMEDY_WORDS[s.remedy]} {s.value:.2f}% ({s.images_right} right, {s.images_needed} "
                            f"needed{'; parity gate: ' + '; '.join(s.gate) if s.gate else ''})" for s in steps)
        allowed = len(fallback.keep_float)
        nodes = {node.name: node for node in onnx.load(str(self.job.out / self.source)).graph.node}
        paths = self.job.module_paths
        tried = ", ".join((paths.module_of(nodes[n]) if paths else None) or n for n in fallback.keep_float)
        search = (f"float fallback (ranked {fallback.ranking}, {fallback.evaluations} evaluations, "
                  f"{fallback.seconds:.1f} s) kept in float the most layers allowed, {allowed}: {tried}"
                  if allowed else "float fallback is off (no layer may be kept in float)")
        previous = "left as it was" if self.job.target.exists() else "not created"
        what = budget.describe() + (f"'s {self._reference_value():.2f}%" if budget.metric == "top1-drop" else "")
        return AccuracyError(
            f"{name} misses the accuracy budget ({what}, on {len(self.inputs)} images of {self.data}): {reached}; "
            f"{search}. Try more layers in float (",
            Arg("max_float_layers", max(2 * allowed, 1)), "), a looser budget, more calibration images (",
            Arg("samples", 2 * form.options.samples), ") or another calibration method (",
            Arg("method", _other_method(form.options)),
            f"), or export FP16 instead. {self.job.target} was {previous}",
            parameter=budget.parameter)


def _step(remedy: str, evaluation: Evaluation) -> BudgetStep:
    return BudgetStep(remedy, round(evaluation.value, 4), evaluation.hits, evaluation.needed,
                      round(evaluation.logit_error, 6), evaluation.meets, list(evaluation.gate))


def _order(count: int, rng: np.random.Generator) -> list[int]:
    """The indices of ``count`` images in the order they are drawn, fixed by ``rng``."""
    return [int(i) for i in rng.permutation(count)]


def _other_method(options: CalibrationOptions) -> str:
    """A calibration method of ``options``' precision other than the one it used."""
    methods = FP8_METHODS if options.precision == "fp8" else tuple(METHODS)
    return next(m for m in methods if m != options.method)


def _calib_key(options: CalibrationOptions) -> tuple[Path, int, int]:
    return Path(options.calib_dir), options.samples, options.seed
