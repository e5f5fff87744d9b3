"""An export from PyTorch, planned before it starts: PyTorch -> ONNX -> simplified -> FP16 / INT8 / FP8 -> TensorRT
engines, each artifact verified.

The plan is the list of steps that make the artifacts the export will write, so the progress count is the number
of steps that run; everything that can be refused is refused before the first. ``export.job`` runs the steps in a
staging folder that replaces the export folder, whole, when all of them have passed.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import TypeVar

from ..artifacts import ARTIFACTS, PRECISIONS, is_runtime_cache, onnx_artifact
from ..calibration.budget import AccuracyBudget
from ..calibration.fallback import quantized_layers
from ..calibration.fp8 import fp8_nodes
from ..calibration.options import CalibrationOptions, Fp8Options, Int8Options, check_separate_caches
from ..calibration.quantize import TARGETS, Target
from ..errors import InputError
from ..export_folder import VERIFICATION_NAME
from ..imagefolder import LabeledFolder
from ..manifest import MANIFEST_NAME
from ..models.variants import resolve_name
from ..tensorrt.builder import BuildOptions
from . import fp8, int8, openvino_parity
from .engine_plan import TIMING_CACHE_NAME, plan_engines
from .job import FP8, FP32, ExportJob, ExportResult, Step
from .onnx_graph import DEFAULT_OPSET
from .remedies import BudgetedQuantization, Form, check_budget

Options = TypeVar("Options", bound=CalibrationOptions)


def export_model(
    variant: str,
    *,
    precisions: tuple[str, ...] = ("fp32",),
    out_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    image_size: int = 224,
    num_classes: int = 1000,
    labels: list[str] | None = None,
    opset: int = DEFAULT_OPSET,
    do_simplify: bool = True,
    build: BuildOptions = BuildOptions(),
    flavours: tuple[str, ...] | None = None,
    require_engine: bool = False,
    int8_options: Int8Options | None = None,
    fp8_options: Fp8Options | None = None,
    eval_dir: str | Path | None = None,
    budget: AccuracyBudget | None = None,
    openvino: bool = False,
    seed: int = 0,
    quiet: bool = False,
) -> ExportResult:
    """Export ``variant`` and verify every artifact; docs/export.md lists the files it writes.

    Without ``checkpoint`` the weights are random (seeded by ``seed``), which exercises the whole pipeline.
    ``"int8"`` needs ``int8_options`` (the calibration images), ``"fp8"`` needs ``fp8_options``; with ``"fp16"``
    too, the INT8 and FP8 models' float parts are fp16. FP8 engines are built for the compute capabilities with
    FP8 (8.9 and later) only. Each ONNX file TensorRT builds gets an engine of each TensorRT flavour in ``flavours``
    (``"tensorrt"``, ``"tensorrt-rtx"``; by default every flavour that can build here, the others recorded with
    the commands that finish them): TensorRT needs a GPU, TensorRT for RTX builds on any machine, for
    ``build.compute_capabilities``. Engines a GPU here runs are verified; the others are recorded as built, not
    yet verified on a GPU. ``require_engine`` asks for at least one engine built here. Whatever cannot be met is
    refused before any work. ``eval_dir`` (a labeled image folder) adds top-1/top-5 of the model and every
    artifact. ``budget`` makes the INT8 and FP8 forms within an accuracy budget (``export.remedies``: smoothing,
    then float fallback; a top-1 drop is judged on ``eval_dir``), and fails with what it reached when they cannot
    meet it. ``openvino`` also runs each ONNX file OpenVINO opens on OpenVINO, in FP32 and (where the CPU has
    it) bf16, and records that parity with the file (``export.openvino_parity``). Raises :class:`ParityError` when
    an artifact misses its precision's thresholds.

    The export is a transaction: its files are staged beside ``out_dir`` and replace that folder only once
    every step has passed, so an interrupted or failed export leaves ``out_dir`` as it was (absent if new).
    """
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise InputError(f"precisions must be among {', '.join(PRECISIONS)}, got {precisions}", parameter="precisions")
    int8_run = _calibration_options("int8", precisions, int8_options, "Int8Options")
    fp8_run = _calibration_options("fp8", precisions, fp8_options, "Fp8Options")
    check_separate_caches(int8_run, fp8_run)
    targets = [TARGETS[t] for t in int8_run.targets] if int8_run is not None else []
    calibrated = [o for o in (int8_run, fp8_run) if o is not None]
    written = ([FP32] + [onnx_artifact("fp16")] * ("fp16" in precisions) + [t.artifact for t in targets]
               + [FP8] * ("fp8" in precisions))
    engines = plan_engines([kind for kind in written if kind.precision in precisions], flavours, build,
                           require_engine=require_engine)
    eval_folder = LabeledFolder.scan(eval_dir) if eval_dir else None
    if budget is not None:
        check_budget(budget, precisions, eval_folder)
    on_openvino = openvino_parity.OpenVINOPlan.here() if openvino else None
    name = resolve_name(variant)
    out = Path(out_dir or Path("exports") / name)
    check_export_target(out)
    if out_dir is None:
        announce_replacing(out)
    job = ExportJob(out, build, quiet, engine_plans=engines, openvino=on_openvino)

    weights = f"checkpoint {checkpoint}" if checkpoint else f"random weights, seed {seed}"
    plan = [Step(f"Building {name} ({weights})",
                 partial(job.build_model, name, num_classes, image_size, checkpoint, seed, labels))]
    for options in calibrated:
        plan.append(Step(f"Reading calibration images from {options.calib_dir}"
                         + (f" for {options.precision.upper()}" if len(calibrated) > 1 else ""),
                         partial(job.read_calibration, options)))
    within, forms = None, {}
    if budget is not None:
        half = "fp16" in precisions
        forms = {f.kind.file_name: f for f in ([_int8_form(int8_run, t, half) for t in targets] if int8_run else [])
                 + ([_fp8_form(fp8_run, half)] if fp8_run else [])}
        within = BudgetedQuantization(job, budget, list(forms.values()), eval_folder)
        plan.append(Step(f"Reading the images the accuracy budget is judged on ({budget.describe()})",
                         within.read_held_out))
    plan.append(Step(f"Exporting to ONNX (opset {opset})", partial(job.export_onnx, opset)))
    if do_simplify:
        plan.append(Step("Simplifying with onnxsim", job.simplify))
    plan += job.verify_steps(FP32)
    if "fp16" in precisions:
        plan += [Step("Converting to mixed FP16 (float32 I/O)", job.write_fp16),
                 *job.verify_steps(onnx_artifact("fp16"))]
    if within is not None:
        plan.append(Step("Smoothing activation outliers of model.onnx on the calibration images (SmoothQuant)",
                         within.smooth))
    within_budget = " within the accuracy budget" if within else ""
    if int8_run is not None:
        plan.append(Step(f"Calibrating activation ranges ({int8_run.method})",
                         partial(within.calibrate if within else job.calibrate, int8_run)))
        for target in targets:
            half = "fp16" in precisions and target.fp16_float_parts
            quantize = (partial(within.quantize, forms[target.artifact.file_name]) if within
                        else partial(job.quantize, int8_run, target, half))
            plan.append(Step(f"Quantizing to {target.artifact.file_name} for {target.description}"
                             + (", float parts fp16" if half else "") + within_budget, quantize))
            plan += job.verify_steps(target.artifact, target=target.name, float_precision="fp16" if half else "fp32")
    if fp8_run is not None:
        half = "fp16" in precisions
        plan.append(Step(f"Calibrating FP8 activation ranges ({fp8_run.method})",
                         partial(within.calibrate if within else job.calibrate, fp8_run)))
        plan.append(Step(f"Quantizing to {FP8.file_name} (E4M3, TensorRT explicit quantization)"
                         + (", float parts fp16" if half else "") + within_budget,
                         partial(within.quantize, forms[FP8.file_name]) if within
                         else partial(job.quantize_fp8, half)))
        plan.append(job.verify_step(FP8, target=FP8.target, float_precision="fp16" if half else "fp32"))
    if within is not None:
        plan.append(Step("Recording the accuracy budget and its remedies", within.record))
    plan += job.engine_steps()
    if eval_folder:
        plan.append(Step(f"Evaluating accuracy on {eval_folder.root} ({len(eval_folder.samples)} images)",
                         partial(job.evaluate, eval_folder)))
    # Caches of the earlier export in the folder are carried over when this run uses them; nothing else is.
    reuse = (tuple(o.cache_name for o in calibrated)
             + (TIMING_CACHE_NAME,) * any(p.builds for p in engines))
    job.run(plan, reuse=reuse)
    return job.result()


def _int8_form(options: Int8Options, target: Target, fp16: bool) -> Form:
    """The INT8 ``target`` form as the budget quantizes it: float parts fp16 with ``fp16`` where the target has them."""
    half = fp16 and target.fp16_float_parts
    return Form(target.artifact, options,
                lambda source, ranges, keep: int8.quantize(source, ranges, options, target, fp16=half, keep_float=keep),
                quantized_layers)


def _fp8_form(options: Fp8Options, fp16: bool) -> Form:
    return Form(FP8, options, lambda source, ranges, keep: fp8.quantize(source, ranges, fp16=fp16, keep_float=keep),
                lambda model: [node.name for node in fp8_nodes(model)])


def _calibration_options(precision: str, precisions: tuple[str, ...], options: Options | None,
                         type_name: str) -> Options | None:
    """The options of a calibrated ``precision``, checked before any work; None where it is not asked for."""
    if precision not in precisions:
        return None
    if options is None:
        raise InputError(f"precision {precision!r} needs calibration images: pass "
                         f"{precision}_options={type_name}(calib_dir)", parameter=f"{precision}_options")
    options.check()
    return options


def announce_replacing(out: Path) -> None:
    """Say, before any work, which earlier export in the default folder this one will replace: someone following the
    README's examples one after another would otherwise lose the first export's files without a word."""
    if (out / MANIFEST_NAME).is_file():
        held = [name for name in ARTIFACTS if (out / name).is_file()]
        warnings.warn(f"this export replaces the one in {out} ({', '.join(held) or 'no artifacts'}) once it passes "
                      "its checks; give --out DIR to keep that one", stacklevel=3)


def check_export_target(out: Path) -> None:
    """An export replaces its folder as a whole, so the folder must be new, empty, or an earlier export: other
    files in it would be lost."""
    if out.exists() and not out.is_dir():
        raise InputError(f"export folder {str(out)!r} is a file", parameter="out_dir")
    known = {*ARTIFACTS, MANIFEST_NAME, VERIFICATION_NAME, Int8Options.cache_name, Fp8Options.cache_name,
             TIMING_CACHE_NAME}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in known and not is_runtime_cache(p)) \
        if out.is_dir() else []
    if foreign:
        raise InputError(f"export folder {str(out)!r} holds files that are not part of an export "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); an export replaces its "
                         "folder whole: choose a new or empty folder", parameter="out_dir")
