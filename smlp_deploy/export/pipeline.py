"""The export job: PyTorch -> ONNX -> simplified -> FP16 / INT8 -> TensorRT engines, each artifact verified.

Engines come in two TensorRT flavours (``tensorrt_flavours``); ``export.engines`` plans them.

An export is planned before it starts: the plan is the list of steps that make the artifacts it will write,
so the progress count is the number of steps that run. The steps write into a staging folder that replaces
the export folder, whole, when all of them have passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import onnx
import torch

from ..artifacts import (
    ARTIFACTS,
    PRECISIONS,
    ArtifactKind,
    engine_source,
    is_runtime_cache,
    onnx_artifact,
    runs_precision,
)
from ..calibration.dataset import CalibrationSet
from ..calibration.methods import Ranges
from ..calibration.quantize import TARGETS, Target
from ..errors import ArtifactError, BackendUnavailableError, InputError, OutputError
from ..evaluation import class_indices, evaluate
from ..fileio import sha256_file, staged_directory
from ..imagefolder import LabeledFolder
from ..manifest import (
    IMAGENET_LABELS,
    MANIFEST_NAME,
    UNVERIFIED,
    VERIFIED,
    Artifact,
    Checkpoint,
    GpuRecord,
    Manifest,
    ModelInfo,
    ParityReport,
    SimplifyRecord,
)
from ..models.complexity import count_macs, count_params
from ..models.registry import create_model
from ..models.smlpnet import SMLPNet
from ..models.variants import resolve_name
from ..progress import Steps, format_table
from ..runtime.backends.factory import load_backend
from ..runtime.backends.torch_backend import TorchBackend
from ..runtime.preprocess import Preprocessor
from ..tensorrt_flavours import FLAVOURS, TENSORRT_RTX, current_compute_capability
from . import fp8, int8, openvino_parity
from .engines import TIMING_CACHE_NAME, FlavourPlan, engine_status, plan_engines
from .onnx_graph import DEFAULT_OPSET, export_onnx, save_model, simplify
from .parity import check, compare
from .precision import convert_to_fp16
from .tensorrt_build import BuildOptions, build_engine
from .verification import VERIFICATION_NAME, VerificationSet, run_in_batches

FP32 = onnx_artifact("fp32")
FP8 = onnx_artifact("fp8", "tensorrt")
T = TypeVar("T")
Options = TypeVar("Options", bound=int8.CalibrationOptions)


@dataclass
class ExportResult:
    out_dir: Path
    manifest: Manifest

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def reports(self) -> dict[str, ParityReport]:
        """Each artifact's parity against PyTorch, by file name."""
        return {a.path: a.parity for a in self.manifest.artifacts if a.parity is not None}

    def summary(self) -> str:
        rows = []
        for a in self.manifest.artifacts:
            p = a.parity
            rows.append([
                a.path, a.format, a.precision, f"{a.bytes / 2**20:.1f} MiB",
                f"{a.build_seconds:.1f} s" if a.build_seconds is not None else "-",
                f"{p.rel_max_abs_diff:.1e}" if p else "-", f"{p.cosine:.6f}" if p else "-",
                f"{p.top1_agreement:.0%}" if p else "-", f"{a.accuracy.top1:.2%} top-1" if a.accuracy else "-",
            ])
            if a.status == UNVERIFIED:
                rows[-1][5:8] = ["not yet verified on a GPU", "", ""]
        headers = ["artifact", "format", "precision", "size", "build", "max|diff|/scale", "cosine", "top-1 agree",
                   "accuracy"]
        lines = [format_table(headers, rows)]
        checks = [[a.path, f"{c.backend} {c.precision}", c.reference, f"{c.parity.rel_max_abs_diff:.1e}",
                   f"{c.parity.cosine:.6f}", f"{c.parity.top1_agreement:.0%}"]
                  for a in self.manifest.artifacts for c in a.backends or []]
        if checks:
            lines += ["", format_table(["artifact", "runs on", "against", "max|diff|/scale", "cosine", "top-1 agree"],
                                       checks)]
        for engines in self.manifest.engines:
            title = FLAVOURS[engines.flavour].title
            lines += ["", f"{title} engines: {engines.status}" + (f": {engines.reason}" if engines.reason else "")]
            if engines.commands:
                lines.append(f"  to finish, in {self.out_dir}:" if engines.status == "skipped" else
                             f"  to verify on a GPU they run on, or rebuild, in {self.out_dir}:")
                lines += [f"    {c}" for c in engines.commands]
        return "\n".join(lines)


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[], object]


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
    int8_options: int8.Int8Options | None = None,
    fp8_options: fp8.Fp8Options | None = None,
    eval_dir: str | Path | None = None,
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
    artifact. ``openvino`` also runs each ONNX file OpenVINO opens on OpenVINO, in FP32 and (where the CPU has
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
    if fp8_run is not None:
        fp8.check_separate_caches(int8_run, fp8_run)
    targets = [TARGETS[t] for t in int8_run.targets] if int8_run is not None else []
    calibrated = [o for o in (int8_run, fp8_run) if o is not None]
    written = ([FP32] + [onnx_artifact("fp16")] * ("fp16" in precisions) + [t.artifact for t in targets]
               + [FP8] * ("fp8" in precisions))
    engines = plan_engines([kind for kind in written if kind.precision in precisions], flavours, build,
                           require_engine=require_engine)
    eval_folder = LabeledFolder.scan(eval_dir) if eval_dir else None
    on_openvino = openvino_parity.OpenVINOPlan.here() if openvino else None
    name = resolve_name(variant)
    out = Path(out_dir or Path("exports") / name)
    check_export_target(out)
    job = _ExportJob(out, build, quiet, engine_plans=engines, openvino=on_openvino)

    weights = f"checkpoint {checkpoint}" if checkpoint else f"random weights, seed {seed}"
    plan = [Step(f"Building {name} ({weights})",
                 partial(job.build_model, name, num_classes, image_size, checkpoint, seed, labels))]
    for options in calibrated:
        plan.append(Step(f"Reading calibration images from {options.calib_dir}"
                         + (f" for {options.precision.upper()}" if len(calibrated) > 1 else ""),
                         partial(job.read_calibration, options)))
    plan.append(Step(f"Exporting to ONNX (opset {opset})", partial(job.export_onnx, opset)))
    if do_simplify:
        plan.append(Step("Simplifying with onnxsim", job.simplify))
    plan += job.verify_steps(FP32)
    if "fp16" in precisions:
        plan += [Step("Converting to mixed FP16 (float32 I/O)", job.write_fp16),
                 *job.verify_steps(onnx_artifact("fp16"))]
    if int8_run is not None:
        plan.append(Step(f"Calibrating activation ranges ({int8_run.method})", partial(job.calibrate, int8_run)))
        for target in targets:
            half = "fp16" in precisions and target.fp16_float_parts
            plan.append(Step(f"Quantizing to {target.artifact.file_name} for {target.description}"
                             + (", float parts fp16" if half else ""), partial(job.quantize, int8_run, target, half)))
            plan += job.verify_steps(target.artifact, target=target.name, float_precision="fp16" if half else "fp32")
    if fp8_run is not None:
        half = "fp16" in precisions
        plan.append(Step(f"Calibrating FP8 activation ranges ({fp8_run.method})", partial(job.calibrate, fp8_run)))
        plan.append(Step(f"Quantizing to {FP8.file_name} (E4M3, TensorRT explicit quantization)"
                         + (", float parts fp16" if half else ""), partial(job.quantize_fp8, half)))
        plan.append(job.verify_step(FP8, target=FP8.target, float_precision="fp16" if half else "fp32"))
    plan += job.engine_steps()
    if eval_folder:
        plan.append(Step(f"Evaluating accuracy on {eval_folder.root} ({len(eval_folder.samples)} images)",
                         partial(job.evaluate, eval_folder)))
    # Caches of the earlier export in the folder are carried over when this run uses them; nothing else is.
    reuse = (tuple(o.cache_name for o in calibrated)
             + (TIMING_CACHE_NAME,) * any(p.builds for p in engines))
    job.run(plan, reuse=reuse)
    return job.result()


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


def check_export_target(out: Path) -> None:
    """An export replaces its folder as a whole, so the folder must be new, empty, or an earlier export: other
    files in it would be lost."""
    if out.exists() and not out.is_dir():
        raise InputError(f"export folder {str(out)!r} is a file", parameter="out_dir")
    known = {*ARTIFACTS, MANIFEST_NAME, VERIFICATION_NAME, int8.CACHE_NAME, fp8.CACHE_NAME, TIMING_CACHE_NAME}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in known and not is_runtime_cache(p)) \
        if out.is_dir() else []
    if foreign:
        raise InputError(f"export folder {str(out)!r} holds files that are not part of an export "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); an export replaces its "
                         "folder whole: choose a new or empty folder", parameter="out_dir")


def build_from_onnx(
    directory: str | Path, build: BuildOptions = BuildOptions(), *, flavours: tuple[str, ...] | None = None,
    quiet: bool = False,
) -> ExportResult:
    """Build the engines an earlier export in ``directory`` planned, with ``flavours`` (by default each planned
    flavour that can build here), verifying those a GPU here runs against the PyTorch logits recorded there: on
    a GPU host for TensorRT, anywhere for TensorRT for RTX. The other flavours' records stay as they were."""
    out = Path(directory)
    manifest, verification = _load_export(out)
    planned = [name for status in manifest.engines for name in status.engines]
    listed = [a.kind for a in manifest.artifacts if a.kind is not None and a.kind.builds_engines]
    # The sources of the planned engines; an export that planned none offers every ONNX file TensorRT builds.
    sources = list(dict.fromkeys(engine_source(name) for name in planned)) if planned else listed
    for kind in sources:
        recorded = manifest.artifact(kind.file_name)
        if recorded is None or not (out / kind.file_name).is_file():
            raise ArtifactError(f"{out / kind.file_name} is missing from the export: re-export {out}")
        if sha256_file(out / kind.file_name) != recorded.sha256:
            raise ArtifactError(f"{out / kind.file_name} changed since it was verified (sha256 differs): re-export")
    names = flavours or tuple(status.flavour for status in manifest.engines) or tuple(FLAVOURS)
    plans = [p for p in plan_engines(sources, flavours, build, require_engine=True)  # named ones must build here
             if p.builds and p.flavour.name in names]
    if not plans:
        reasons = "; ".join(f"{FLAVOURS[n].title}: {FLAVOURS[n].build_unavailable()}" for n in names)
        raise BackendUnavailableError(f"cannot build the planned engines here ({reasons})", parameter="directory")
    job = _ExportJob(out, build, quiet, engine_plans=plans, manifest=manifest, verification=verification)
    job.run(job.engine_steps(), reuse=tuple(p.name for p in out.iterdir() if p.is_file()))
    return job.result()


def verify_engines(export_dir: str | Path, *, quiet: bool = False) -> ExportResult:
    """On a GPU: run every engine of the export in ``directory`` that this GPU runs through the verification
    inputs, record its parity against the PyTorch logits recorded there, and mark it verified (on this GPU). The
    one command a GPU owner runs on engines built elsewhere (TensorRT for RTX builds them on any machine)."""
    out = Path(export_dir)
    manifest, verification = _load_export(out, "export_dir")
    engines = [(a, kind, flavour) for a in manifest.artifacts
               if (kind := a.kind) is not None and (flavour := kind.flavour) is not None]
    if not engines:
        raise ArtifactError(f"the export in {out} holds no engine: build them with smlp-export --from-onnx {out}",
                            parameter="export_dir")
    runnable: list[tuple[Artifact, ArtifactKind]] = []
    reasons: dict[str, str] = {}
    for artifact, kind, flavour in engines:
        reason = flavour.run_unavailable() or _precision_unavailable(artifact.precision)
        if reason:
            reasons[flavour.title] = reason
        else:
            runnable.append((artifact, kind))
    if not runnable:
        raise BackendUnavailableError("no engine of this export runs here: " + "; ".join(reasons.values()),
                                      parameter="export_dir")
    for artifact, _ in runnable:
        if sha256_file(out / artifact.path) != artifact.sha256:
            raise ArtifactError(f"{out / artifact.path} changed since it was built (sha256 differs): rebuild it with "
                                f"smlp-export --from-onnx {out}")
    job = _ExportJob(out, BuildOptions(), quiet, manifest=manifest, verification=verification)
    steps = [job.verify_step(kind) for _, kind in runnable]
    job.run(steps, reuse=tuple(p.name for p in out.iterdir() if p.is_file()))
    return job.result()


def _precision_unavailable(precision: str) -> str | None:
    """Why this GPU does not run ``precision``'s engines (FP8 before compute capability 8.9), or None."""
    capability = current_compute_capability()
    if runs_precision(capability, precision):
        return None
    return f"{precision.upper()} engines need a GPU with {precision.upper()}, and this one is compute capability " \
        f"{capability}"


def gpu_record() -> GpuRecord:
    """The GPU torch runs on now, as the manifest records it."""
    return GpuRecord(torch.cuda.get_device_name(), current_compute_capability())


def _load_export(out: Path, parameter: str = "directory") -> tuple[Manifest, VerificationSet]:
    if not (out / MANIFEST_NAME).is_file() or not (out / VERIFICATION_NAME).is_file():
        raise ArtifactError(f"{out} is not an export directory (no {MANIFEST_NAME} and {VERIFICATION_NAME}): export "
                            "to it first", parameter=parameter)
    return Manifest.load(out / MANIFEST_NAME), VerificationSet.load(out / VERIFICATION_NAME)


class _ExportJob:
    """The state one export builds up while its planned steps run.

    The steps write into a staging folder beside the target (``out`` while they run), which replaces the
    target only when every step has passed: an interrupted or failed export leaves the previous one as it was.

    What the steps work on is given (an earlier export's manifest and verification set, for its engines) or made
    once, by the step that makes it: the PyTorch model, its manifest and verification set (``build_model``, the
    first step of an export from PyTorch), the ONNX model in memory (``export_onnx``, then ``simplify``). Each is
    read through a property that names a plan running a step before the one that makes what it needs.
    """

    def __init__(self, target: Path, build: BuildOptions, quiet: bool, *, engine_plans: Sequence[FlavourPlan] = (),
                 openvino: openvino_parity.OpenVINOPlan | None = None, manifest: Manifest | None = None,
                 verification: VerificationSet | None = None):
        self.target, self.out, self.build, self.quiet = target, target, build, quiet
        self.progress = Steps(total=0, quiet=quiet)
        self.engine_plans = engine_plans  # the engines of each TensorRT flavour
        self.openvino = openvino  # export_model(openvino=True)
        self._manifest, self._verification = manifest, verification
        self._model: SMLPNet | None = None
        self._proto: onnx.ModelProto | None = None
        self.calib: dict[tuple[Path, int, int], CalibrationSet] = {}  # by folder, samples and seed
        self.ranges: dict[str, Ranges] = {}  # by precision

    @property
    def manifest(self) -> Manifest:
        return _made(self._manifest, "the manifest")

    @property
    def verification(self) -> VerificationSet:
        return _made(self._verification, "the verification set")

    @property
    def model(self) -> SMLPNet:
        return _made(self._model, "the PyTorch model")

    @property
    def proto(self) -> onnx.ModelProto:
        return _made(self._proto, "the ONNX model")

    def run(self, plan: list[Step], *, reuse: tuple[str, ...]) -> None:
        """Run ``plan`` in a staging folder seeded with the ``reuse`` files of the target, then swap it in."""
        self.progress.total = len(plan)
        try:
            self._run_staged(plan, reuse)
        except OSError as exc:  # a full disk, a read-only folder: nothing of this run is left behind
            previous = "left as it was" if self.target.exists() else "not created"
            where = f" ({exc.filename})" if exc.filename and ".staging-" not in str(exc.filename) else ""
            raise OutputError(f"the export to {self.target} stopped: {exc.strerror or exc}{where}; {self.target} "
                              f"was {previous}", parameter="out_dir") from exc
        self.out = self.target

    def _run_staged(self, plan: list[Step], reuse: tuple[str, ...]) -> None:
        with staged_directory(self.target, seed_from_target=reuse) as stage:
            self.out = stage
            if self.build.timing_cache is None:
                self.build = replace(self.build, timing_cache=stage / TIMING_CACHE_NAME)
            for step in plan:
                with self.progress.step(step.title):
                    step.run()
            for engines in self.engine_plans:
                self.manifest.engines = [e for e in self.manifest.engines if e.flavour != engines.flavour.name] + [
                    engine_status(engines, self.manifest.model.image_size, self.build, self.out)]
                if not engines.builds:
                    self.say(f"{engines.flavour.title} engines skipped: {engines.unavailable}")
            self.manifest.save(stage)

    def say(self, message: str) -> None:
        """A progress note; paths in the staging folder are shown where they will be."""
        self.progress.say(message.replace(str(self.out), str(self.target)))

    def result(self) -> ExportResult:
        return ExportResult(self.target, self.manifest)

    # Steps that make the ONNX artifacts.

    def build_model(self, name: str, num_classes: int, image_size: int, checkpoint: str | Path | None, seed: int,
                    labels: list[str] | None) -> None:
        torch.manual_seed(seed)
        model = self._model = create_model(name, num_classes=num_classes, image_size=image_size, checkpoint=checkpoint)
        self._verification = VerificationSet.create(model, model.preprocess, seed=seed)
        info = ModelInfo(
            name=model.variant, variant=model.variant.removeprefix("smlpnet_"), num_classes=num_classes,
            image_size=image_size, params=count_params(model), macs=count_macs(model),
            checkpoint=Checkpoint(str(checkpoint), sha256_file(checkpoint)) if checkpoint else None,
            seed=None if checkpoint else seed,
        )
        default_labels = IMAGENET_LABELS if num_classes == 1000 else [str(i) for i in range(num_classes)]
        self._manifest = Manifest(model=info, preprocess=model.preprocess, labels=labels or default_labels,
                                  simplify=SimplifyRecord(False, "skipped (do_simplify=False)"))

    def read_calibration(self, options: int8.CalibrationOptions) -> None:
        """Run before anything is written, so a folder without usable images fails cleanly. INT8 and FP8 drawing
        the same sample share it."""
        key = (Path(options.calib_dir), options.samples, options.seed)
        if key in self.calib:
            self.say("the same images as for INT8")
            return
        calib = self.calib[key] = int8.read_calibration_images(options, self.manifest.preprocess, quiet=self.quiet)
        self.say(f"{len(calib)} images, {len(calib.skipped)} unreadable skipped")

    def export_onnx(self, opset: int) -> None:
        self.verification.save(self.out / VERIFICATION_NAME)
        self._proto = export_onnx(self.model, self.out / FP32.file_name, opset=opset)

    def simplify(self) -> None:
        simplified = simplify(self.proto)
        self._proto = simplified.model
        self.manifest.simplify = SimplifyRecord(simplified.simplified, simplified.note)
        save_model(simplified.model, self.out / FP32.file_name)
        self.say(simplified.note)

    def write_fp16(self) -> None:
        save_model(convert_to_fp16(self.proto), self.out / onnx_artifact("fp16").file_name)

    def calibrate(self, options: int8.CalibrationOptions) -> None:
        calib = self.calib[(Path(options.calib_dir), options.samples, options.seed)]
        self.ranges[options.precision], record = int8.calibrate(
            self.out / FP32.file_name, calib, self.manifest.preprocess, options, say=self.say, quiet=self.quiet,
        )
        cache = Path(record.cache)
        # The default cache lives in the export folder: recorded by name, it stays right wherever the folder goes.
        record = replace(record, cache=cache.name if cache.parent == self.out else str(cache))
        if options.precision == "fp8":
            self.manifest.fp8_calibration = record
        else:
            self.manifest.calibration = record

    def quantize(self, options: int8.Int8Options, target: Target, fp16: bool) -> None:
        model = int8.quantize(self.out / FP32.file_name, self.ranges["int8"], options, target, fp16=fp16)
        save_model(model, self.out / target.artifact.file_name)

    def quantize_fp8(self, fp16: bool) -> None:
        save_model(fp8.quantize(self.out / FP32.file_name, self.ranges["fp8"], fp16=fp16), self.out / FP8.file_name)

    def verify_steps(self, kind: ArtifactKind, **extra: Any) -> list[Step]:
        """An ONNX file's verification, and with ``openvino`` its parity on OpenVINO."""
        steps = [self.verify_step(kind, **extra)]
        openvino = self.openvino
        if openvino is not None and openvino.applies_to(kind):
            precisions = ", ".join(openvino.precisions_for(kind))
            steps.append(Step(f"Verifying {kind.file_name} on OpenVINO ({precisions}) against "
                              f"{'ONNX Runtime' if kind.precision == 'int8' else 'PyTorch'}",
                              partial(self.verify_on_openvino, kind, openvino)))
        return steps

    def verify_on_openvino(self, kind: ArtifactKind, openvino: openvino_parity.OpenVINOPlan) -> None:
        records = openvino_parity.measure(self.out / kind.file_name, kind, self.verification,
                                          openvino.precisions_for(kind))
        verified = _made(self.manifest.artifact(kind.file_name), f"the record of {kind.file_name}")
        self.manifest.record(replace(verified, backends=records))
        for record in records:
            self.say(f"{record.precision}: cosine {record.parity.cosine:.6f}, max|diff| "
                     f"{record.parity.rel_max_abs_diff:.1e} of the scale, top-1 {record.parity.top1_agreement:.0%}")
        if openvino.skipped and kind.precision != "int8":
            self.say(openvino.skipped)
        openvino_parity.check(records, kind.file_name)

    def verify_step(self, kind: ArtifactKind, **extra: Any) -> Step:
        where = "with ONNX Runtime " if kind.format == "onnx" else ""
        return Step(f"Verifying {kind.file_name} {where}against PyTorch", partial(self.verify, kind, **extra))

    def verify(self, kind: ArtifactKind, **extra: Any) -> None:
        """Run the verification inputs through the artifact, record it with its parity, enforce the thresholds
        (the failing numbers stay on record). An engine keeps the record its build made, now verified here."""
        path = self.out / kind.file_name
        inputs, reference = self.verification.for_precision(kind.precision)
        backend = load_backend(path, device="cpu" if kind.format == "onnx" else None)
        try:
            logits = run_in_batches(backend.run, inputs, backend.max_batch_size)
            gpu = gpu_record() if kind.is_engine else None
        finally:
            backend.close()
        report = compare(reference, logits)
        built = self.manifest.artifact(kind.file_name) if kind.is_engine else None
        if built is not None:
            self.manifest.record(replace(built, parity=report, status=VERIFIED, gpu=gpu))
        else:
            self.manifest.record(Artifact(path=kind.file_name, format=kind.format, precision=kind.precision,
                                          sha256=sha256_file(path), bytes=path.stat().st_size, parity=report, **extra))
        self.say(f"cosine {report.cosine:.6f}, max|diff| {report.max_abs_diff:.2e}, "
                 f"top-1 {report.top1_agreement:.0%}")
        check(report, kind.precision, kind.file_name)

    # Engines.

    def engine_steps(self) -> list[Step]:
        """Build each planned engine with its flavour, and verify it where a GPU here runs it."""
        steps = []
        for plan in self.engine_plans:
            if not plan.builds:
                continue
            for engine in plan.engines:
                steps.append(Step(f"Building {engine.file_name} with {plan.flavour.title}"
                                  + (f" for compute capability {', '.join(plan.capabilities_of(engine))}"
                                     if plan.flavour.builds_without_gpu else ""),
                                  partial(self.build_engine, plan, engine)))
                if plan.verifies(engine):
                    steps.append(self.verify_step(engine))
        return steps

    def build_engine(self, plan: FlavourPlan, engine: ArtifactKind) -> None:
        source = engine_source(engine.file_name)
        path = self.out / engine.file_name
        build = replace(self.build, compute_capabilities=plan.capabilities_of(engine) if plan.flavour is TENSORRT_RTX
                        else None)
        info = build_engine(plan.flavour, self.out / source.file_name, path, self.manifest.model.image_size, build,
                            on_progress=self.say)
        recorded = self.manifest.artifact(source.file_name)
        self.manifest.record(Artifact(
            path=engine.file_name, format=engine.format, precision=engine.precision, sha256=sha256_file(path),
            bytes=path.stat().st_size, target=engine.target,
            float_precision=recorded.float_precision if recorded else None, profile=info.profile,
            tensorrt_version=info.version, gpu=None, flavour=plan.flavour.name,
            compute_capabilities=list(info.compute_capabilities), build_seconds=round(info.build_seconds, 2),
            status=UNVERIFIED,
        ))
        self.say(f"{path.stat().st_size / 2**20:.1f} MiB in {info.build_seconds:.1f} s")

    # Accuracy.

    def evaluate(self, folder: LabeledFolder) -> None:
        """Top-1/top-5 of the PyTorch model and of every artifact that runs here on ``folder``, into the manifest;
        engines built for GPUs this machine lacks (TensorRT for RTX's, built anywhere) are left to smlp-eval there."""
        manifest = self.manifest
        models = {"pytorch": TorchBackend(self.model, device="cpu").run}
        runnable: list[Artifact] = []
        elsewhere: list[Artifact] = []
        for artifact in manifest.artifacts:
            kind = artifact.kind
            why = kind.flavour.run_unavailable() or _precision_unavailable(kind.precision) \
                if kind is not None and kind.flavour is not None else None
            (elsewhere if why else runnable).append(artifact)
        if elsewhere:
            self.say(f"not evaluated here (no GPU that runs them): {', '.join(a.path for a in elsewhere)}")
        backends = {a.path: load_backend(self.out / a.path, model_info=manifest.model) for a in runnable}
        for name, backend in backends.items():
            models[name] = partial(run_in_batches, backend.run, max_batch=backend.max_batch_size)
        indices = class_indices(folder.classes, manifest.labels, manifest.model.num_classes, sortable=False)
        try:
            scores = evaluate(models, folder, Preprocessor(manifest.preprocess), indices, quiet=self.quiet)
        finally:
            for backend in backends.values():
                backend.close()  # engines hold GPU memory
        manifest.model.accuracy = replace(scores.pop("pytorch"), dataset=str(folder.root))
        for artifact in runnable:
            artifact.accuracy = scores[artifact.path]


def _made(value: T | None, what: str) -> T:
    """``value``, which an earlier step made; None there is a plan that runs a step before the one it needs."""
    if value is None:
        raise RuntimeError(f"an export step needs {what}, which an earlier step makes: the plan is out of order")
    return value
