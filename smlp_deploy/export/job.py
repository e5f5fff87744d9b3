"""The export job: the state one export builds up while its planned steps run, the steps themselves, and the
staging folder they write into, which replaces the export folder whole once every step has passed.

``export.pipeline`` plans the steps of an export from PyTorch; ``export.engines`` those that build or verify the
engines of an earlier export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import onnx
import torch

from ..artifacts import ArtifactKind, engine_source, onnx_artifact
from ..calibration.dataset import CalibrationSet
from ..calibration.methods import Ranges
from ..calibration.options import CalibrationOptions, Int8Options
from ..calibration.quantize import Target
from ..errors import OutputError
from ..evaluation import evaluate_artifacts
from ..export_folder import VERIFICATION_NAME
from ..fileio import FolderLock, sha256_file, staged_directory
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
from ..progress import Steps
from ..runtime.backends.factory import load_backend
from ..tensorrt.builder import BuildOptions, build_engine
from ..tensorrt.flavours import TENSORRT_RTX, current_compute_capability
from . import fp8, int8, openvino_parity
from .engine_plan import TIMING_CACHE_NAME, FlavourPlan, engine_status
from .onnx_graph import export_onnx, save_model, simplify
from .parity import check
from .precision import convert_to_fp16
from .scopes import ModulePaths
from .verification import VerificationSet

FP32 = onnx_artifact("fp32")
FP8 = onnx_artifact("fp8", "tensorrt")
T = TypeVar("T")


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


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[], object]


class ExportJob:
    """The state one export builds up while its planned steps run.

    The steps write into a staging folder beside the target (``out`` while they run), which replaces the
    target only when every step has passed: an interrupted or failed export leaves the previous one as it was.
    The job holds the target's writer lock (``lock``: taken when the steps start, unless the caller holds it from
    before it read the folder), so a second export into the same folder is refused.

    What the steps work on is given (an earlier export's manifest and verification set, for its engines) or made
    once, by the step that makes it: the PyTorch model, its manifest and verification set (``build_model``, the
    first step of an export from PyTorch), the ONNX model in memory (``export_onnx``, then ``simplify``). Each is
    read through a property that names a plan running a step before the one that makes what it needs.
    """

    def __init__(self, target: Path, build: BuildOptions, quiet: bool, *, engine_plans: Sequence[FlavourPlan] = (),
                 openvino: openvino_parity.OpenVINOPlan | None = None, manifest: Manifest | None = None,
                 verification: VerificationSet | None = None, lock: FolderLock | None = None):
        self.target, self.out, self.build, self.quiet = target, target, build, quiet
        self.lock = lock or FolderLock(target, parameter="out_dir")
        self.progress = Steps(total=0, quiet=quiet)
        self.engine_plans = engine_plans  # the engines of each TensorRT flavour
        self.openvino = openvino  # export_model(openvino=True)
        self._manifest, self._verification = manifest, verification
        self._model: SMLPNet | None = None
        self._proto: onnx.ModelProto | None = None
        self.calib: dict[tuple[Path, int, int], CalibrationSet] = {}  # by folder, samples and seed
        self.module_paths: ModulePaths | None = None  # the exported graph's module paths, before onnxsim drops them
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

    def update(self, plan: list[Step]) -> None:
        """Run ``plan`` over an earlier export: every file of it is carried into the staging folder."""
        self.run(plan, reuse=tuple(p.name for p in self.target.iterdir() if p.is_file()))

    def run(self, plan: list[Step], *, reuse: tuple[str, ...]) -> None:
        """Run ``plan`` in a staging folder seeded with the ``reuse`` files of the target, then swap it in."""
        self.progress.total = len(plan)
        try:
            self._run_staged(plan, reuse)
        except OSError as exc:
            raise stopped(self.lock, exc) from exc
        self.out = self.target

    def _run_staged(self, plan: list[Step], reuse: tuple[str, ...]) -> None:
        with staged_directory(self.target, seed_from_target=reuse, lock=self.lock) as stage:
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

    def read_calibration(self, options: CalibrationOptions) -> None:
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
        self.module_paths = ModulePaths.of(self._proto)

    def simplify(self) -> None:
        simplified = simplify(self.proto)
        self._proto = simplified.model
        self.manifest.simplify = SimplifyRecord(simplified.simplified, simplified.note)
        save_model(simplified.model, self.out / FP32.file_name)
        self.say(simplified.note)

    def write_fp16(self) -> None:
        save_model(convert_to_fp16(self.proto), self.out / onnx_artifact("fp16").file_name)

    def calibrate(self, options: CalibrationOptions, model: str = FP32.file_name) -> None:
        """Ranges of the float ``model`` of the export folder (model.onnx, or a smoothed copy of it)."""
        calib = self.calib[(Path(options.calib_dir), options.samples, options.seed)]
        self.ranges[options.precision], record = int8.calibrate(
            self.out / model, calib, self.manifest.preprocess, options, say=self.say, quiet=self.quiet,
        )
        cache = Path(record.cache)
        # The default cache lives in the export folder: recorded by name, it stays right wherever the folder goes.
        record = replace(record, cache=cache.name if cache.parent == self.out else str(cache))
        if options.precision == "fp8":
            self.manifest.fp8_calibration = record
        else:
            self.manifest.calibration = record

    def quantize(self, options: Int8Options, target: Target, fp16: bool) -> None:
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
        with load_backend(path, device="cpu" if kind.format == "onnx" else None) as backend:
            report = self.verification.parity(backend, kind.precision, kind.file_name)
            gpu = gpu_record() if kind.is_engine else None
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
        engines built for GPUs this machine lacks are left to smlp-eval there."""
        evaluate_artifacts(self.model, self.manifest, self.out, folder, say=self.say, quiet=self.quiet)


def stopped(lock: FolderLock, exc: OSError) -> OutputError:
    """A full disk, a read-only folder: nothing of this run is left behind."""
    target = lock.target
    previous = "left as it was" if target.exists() else "not created"
    where = f" ({exc.filename})" if exc.filename and ".staging-" not in str(exc.filename) else ""
    return OutputError(f"the export to {target} stopped: {exc.strerror or exc}{where}; {target} was {previous}",
                       parameter=lock.parameter)


def gpu_record() -> GpuRecord:
    """The GPU torch runs on now, as the manifest records it."""
    return GpuRecord(torch.cuda.get_device_name(), current_compute_capability())


def _made(value: T | None, what: str) -> T:
    """``value``, which an earlier step made; None there is a plan that runs a step before the one it needs."""
    if value is None:
        raise RuntimeError(f"an export step needs {what}, which an earlier step makes: the plan is out of order")
    return value
