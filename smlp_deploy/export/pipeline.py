"""The export job: PyTorch -> ONNX -> simplified -> FP16 / INT8 -> TensorRT engines, each artifact verified.

An export is planned before it starts: the plan is the list of steps that make the artifacts it will write,
so the progress count is the number of steps that run. The steps write into a staging folder that replaces
the export folder, whole, when all of them have passed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

from ..artifacts import ARTIFACTS, PRECISIONS, ArtifactKind, engine_source, kind_of, onnx_artifact
from ..calibration.dataset import CalibrationSet
from ..calibration.quantize import TARGETS
from ..environment import tensorrt_unavailable_reason
from ..errors import ArtifactError, BackendUnavailableError, InputError, OutputError
from ..evaluation import class_indices, evaluate
from ..fileio import sha256_file, staged_directory
from ..imagefolder import LabeledFolder
from ..manifest import (
    IMAGENET_LABELS, MANIFEST_NAME, Artifact, Checkpoint, EngineStatus, GpuRecord, Manifest, ModelInfo,
    ParityReport, SimplifyRecord,
)
from ..models.complexity import count_macs, count_params
from ..models.registry import create_model
from ..models.variants import resolve_name
from ..progress import Steps, format_table
from ..runtime.backends.factory import load_backend
from ..runtime.backends.torch_backend import TorchBackend
from ..runtime.preprocess import Preprocessor
from . import int8
from .onnx_graph import DEFAULT_OPSET, export_onnx, save_model, simplify
from .parity import check, compare
from .precision import convert_to_fp16
from .tensorrt_build import BuildOptions, EngineInfo, build_engine, trtexec_command
from .verification import VERIFICATION_NAME, VerificationSet, run_in_batches

TIMING_CACHE_NAME = "timing.cache"
FP32 = onnx_artifact("fp32")


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
                f"{p.rel_max_abs_diff:.1e}" if p else "-", f"{p.cosine:.6f}" if p else "-",
                f"{p.top1_agreement:.0%}" if p else "-", f"{a.accuracy.top1:.2%} top-1" if a.accuracy else "-",
            ])
        headers = ["artifact", "format", "precision", "size", "max|diff|/scale", "cosine", "top-1 agree", "accuracy"]
        engine = self.manifest.engine
        status = f"engine: {engine.status}" + (f": {engine.reason}" if engine.reason else "")
        lines = [format_table(headers, rows), "", status]
        if engine.commands:
            lines.append(f"  to build the engines on a GPU host, in {self.out_dir}:")
            lines += [f"    {c}" for c in engine.commands]
        return "\n".join(lines)


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[], Any]


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
    require_engine: bool = False,
    int8_options: int8.Int8Options | None = None,
    eval_dir: str | Path | None = None,
    seed: int = 0,
    quiet: bool = False,
) -> ExportResult:
    """Export ``variant`` and verify every artifact; see the README for the files it writes.

    Without ``checkpoint`` the weights are random (seeded by ``seed``), which exercises the whole pipeline.
    ``"int8"`` needs ``int8_options`` (the calibration images); with ``"fp16"`` too, the INT8 model's float
    parts are fp16. An engine is built for each requested precision where TensorRT and a GPU are present;
    ``require_engine`` makes their absence an error, raised before any work. ``eval_dir`` (a labeled image
    folder) adds top-1/top-5 of the model and every artifact. Raises :class:`ParityError` when an artifact
    misses its precision's thresholds.

    The export is a transaction: its files are staged beside ``out_dir`` and replace that folder only once
    every step has passed, so an interrupted or failed export leaves ``out_dir`` as it was (absent if new).
    """
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise InputError(f"precisions must be among {', '.join(PRECISIONS)}, got {precisions}", parameter="precisions")
    if "int8" in precisions:
        if int8_options is None:
            raise InputError("precision 'int8' needs calibration images: pass int8_options=Int8Options(calib_dir)",
                             parameter="int8_options")
        int8_options.check()
    reason = tensorrt_unavailable_reason()
    if require_engine and reason:
        raise BackendUnavailableError(f"no TensorRT engine can be built here: {reason}", parameter="require_engine")
    eval_folder = LabeledFolder.scan(eval_dir) if eval_dir else None
    name = resolve_name(variant)
    out = Path(out_dir or Path("exports") / name)
    check_export_target(out)
    job = _ExportJob(out, build, quiet)

    targets = [TARGETS[t] for t in int8_options.targets] if int8_options and "int8" in precisions else []
    written = [FP32] + [onnx_artifact("fp16")] * ("fp16" in precisions) + [t.artifact for t in targets]
    job.engine_sources = [kind for kind in written if kind.engine and kind.precision in precisions]
    job.engine_unavailable = reason

    weights = f"checkpoint {checkpoint}" if checkpoint else f"random weights, seed {seed}"
    plan = [Step(f"Building {name} ({weights})",
                 partial(job.build_model, name, num_classes, image_size, checkpoint, seed, labels))]
    if targets:
        plan.append(Step(f"Reading calibration images from {int8_options.calib_dir}",
                         partial(job.read_calibration, int8_options)))
    plan.append(Step(f"Exporting to ONNX (opset {opset})", partial(job.export_onnx, opset)))
    if do_simplify:
        plan.append(Step("Simplifying with onnxsim", job.simplify))
    plan.append(job.verify_step(FP32))
    if "fp16" in precisions:
        plan += [Step("Converting to mixed FP16 (float32 I/O)", job.write_fp16), job.verify_step(onnx_artifact("fp16"))]
    if targets:
        plan.append(Step(f"Calibrating activation ranges ({int8_options.method})",
                         partial(job.calibrate, int8_options)))
    for target in targets:
        half = "fp16" in precisions and target.fp16_float_parts
        plan.append(Step(f"Quantizing to {target.artifact.file_name} for {target.description}"
                         + (", float parts fp16" if half else ""), partial(job.quantize, int8_options, target, half)))
        plan.append(job.verify_step(target.artifact, target=target.name, float_precision="fp16" if half else "fp32"))
    plan += job.engine_steps()
    if eval_folder:
        plan.append(Step(f"Evaluating accuracy on {eval_folder.root} ({len(eval_folder.samples)} images)",
                         partial(job.evaluate, eval_folder)))
    # Caches of the earlier export in the folder are carried over when this run uses them; nothing else is.
    reuse = (int8.CACHE_NAME,) * bool(targets) + (TIMING_CACHE_NAME,) * bool(job.engine_steps())
    job.run(plan, reuse=reuse)
    return job.result()


def check_export_target(out: Path) -> None:
    """An export replaces its folder as a whole, so the folder must be new, empty, or an earlier export: other
    files in it would be lost."""
    if out.exists() and not out.is_dir():
        raise InputError(f"export folder {str(out)!r} is a file", parameter="out_dir")
    known = {*ARTIFACTS, MANIFEST_NAME, VERIFICATION_NAME, int8.CACHE_NAME, TIMING_CACHE_NAME}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in known) if out.is_dir() else []
    if foreign:
        raise InputError(f"export folder {str(out)!r} holds files that are not part of an export "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); an export replaces its "
                         "folder whole: choose a new or empty folder", parameter="out_dir")


def build_from_onnx(
    directory: str | Path, build: BuildOptions = BuildOptions(), *, quiet: bool = False
) -> ExportResult:
    """Finish an export on a GPU host: build the engines an earlier export planned in ``directory`` and verify
    them against the PyTorch logits recorded there."""
    out = Path(directory)
    if not (out / MANIFEST_NAME).is_file() or not (out / VERIFICATION_NAME).is_file():
        raise ArtifactError(f"{out} is not an export directory (no {MANIFEST_NAME} and {VERIFICATION_NAME}): export "
                            "to it first", parameter="directory")
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"cannot build TensorRT engines here: {reason}")
    manifest = Manifest.load(out / MANIFEST_NAME)
    job = _ExportJob(out, build, quiet)
    job.manifest = manifest
    job.verification = VerificationSet.load(out / VERIFICATION_NAME)
    job.engine_sources = [engine_source(e) for e in manifest.engine.engines]
    for kind in job.engine_sources:
        recorded = manifest.artifact(kind.file_name)
        if recorded is None or not (out / kind.file_name).is_file():
            raise ArtifactError(f"{out / kind.file_name} is missing from the export: re-export {out}")
        if sha256_file(out / kind.file_name) != recorded.sha256:
            raise ArtifactError(f"{out / kind.file_name} changed since it was verified (sha256 differs): re-export")
    job.run(job.engine_steps(), reuse=tuple(p.name for p in out.iterdir() if p.is_file()))
    return job.result()


class _ExportJob:
    """The state one export builds up while its planned steps run.

    The steps write into a staging folder beside the target (``out`` while they run), which replaces the
    target only when every step has passed: an interrupted or failed export leaves the previous one as it was.
    """

    def __init__(self, target: Path, build: BuildOptions, quiet: bool):
        self.target, self.out, self.build, self.quiet = target, target, build, quiet
        self.progress = Steps(total=0, quiet=quiet)
        self.manifest: Manifest | None = None
        self.model: torch.nn.Module | None = None
        self.verification: VerificationSet | None = None
        self.proto: onnx.ModelProto | None = None
        self.calib: CalibrationSet | None = None
        self.ranges: int8.Ranges | None = None
        self.engine_sources: list[ArtifactKind] = []  # the ONNX files engines are built from
        self.engine_unavailable: str | None = None  # why TensorRT cannot build them here
        self.engine_info: dict[str, EngineInfo] = {}

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
            unavailable = self.engine_unavailable
            self.manifest.engine = self.engine_status("skipped" if unavailable else "built", unavailable or "")
            if unavailable and self.engine_sources:
                self.say(f"TensorRT engines skipped: {unavailable}")
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
        self.model = create_model(name, num_classes=num_classes, image_size=image_size, checkpoint=checkpoint)
        self.verification = VerificationSet.create(self.model, self.model.preprocess, seed=seed)
        info = ModelInfo(
            name=self.model.variant, variant=self.model.variant.removeprefix("smlpnet_"), num_classes=num_classes,
            image_size=image_size, params=count_params(self.model), macs=count_macs(self.model),
            checkpoint=Checkpoint(str(checkpoint), sha256_file(checkpoint)) if checkpoint else None,
            seed=None if checkpoint else seed,
        )
        default_labels = IMAGENET_LABELS if num_classes == 1000 else [str(i) for i in range(num_classes)]
        self.manifest = Manifest(model=info, preprocess=self.model.preprocess, labels=labels or default_labels,
                                 simplify=SimplifyRecord(False, "skipped (do_simplify=False)"))

    def read_calibration(self, options: int8.Int8Options) -> None:
        """Run before anything is written, so a folder without usable images fails cleanly."""
        self.calib = int8.read_calibration_images(options, self.manifest.preprocess, quiet=self.quiet)
        self.say(f"{len(self.calib)} images, {len(self.calib.skipped)} unreadable skipped")

    def export_onnx(self, opset: int) -> None:
        self.verification.save(self.out / VERIFICATION_NAME)
        self.proto = export_onnx(self.model, self.out / FP32.file_name, opset=opset)

    def simplify(self) -> None:
        simplified = simplify(self.proto)
        self.proto = simplified.model
        self.manifest.simplify = SimplifyRecord(simplified.simplified, simplified.note)
        save_model(self.proto, self.out / FP32.file_name)
        self.say(simplified.note)

    def write_fp16(self) -> None:
        save_model(convert_to_fp16(self.proto), self.out / onnx_artifact("fp16").file_name)

    def calibrate(self, options: int8.Int8Options) -> None:
        self.ranges, record = int8.calibrate(
            self.out / FP32.file_name, self.calib, self.manifest.preprocess, options, say=self.say,
            quiet=self.quiet,
        )
        cache = Path(record.cache)
        # The default cache lives in the export folder: recorded by name, it stays right wherever the folder goes.
        self.manifest.calibration = replace(record, cache=cache.name if cache.parent == self.out else str(cache))

    def quantize(self, options: int8.Int8Options, target, fp16: bool) -> None:
        model = int8.quantize(self.out / FP32.file_name, self.ranges, options, target, fp16=fp16)
        save_model(model, self.out / target.artifact.file_name)

    def verify_step(self, kind: ArtifactKind, **extra: Any) -> Step:
        where = "with ONNX Runtime " if kind.format == "onnx" else ""
        return Step(f"Verifying {kind.file_name} {where}against PyTorch", partial(self.verify, kind, **extra))

    def verify(self, kind: ArtifactKind, **extra: Any) -> None:
        """Run the verification inputs through the artifact, record it with its parity, enforce the thresholds
        (the failing numbers stay on record)."""
        path = self.out / kind.file_name
        if kind.format == "tensorrt":
            info = self.engine_info[kind.file_name]
            extra |= {"profile": info.profile, "tensorrt_version": info.tensorrt_version,
                      "gpu": GpuRecord(info.gpu_name, info.compute_capability)}
        inputs, reference = self.verification.for_precision(kind.precision)
        backend = load_backend(path, device="cpu" if kind.format == "onnx" else None)
        try:
            logits = run_in_batches(backend.run, inputs, backend.max_batch_size)
        finally:
            backend.close()
        report = compare(reference, logits)
        self.manifest.record(Artifact(path=kind.file_name, format=kind.format, precision=kind.precision,
                                      sha256=sha256_file(path), bytes=path.stat().st_size, parity=report, **extra))
        self.say(f"cosine {report.cosine:.6f}, max|diff| {report.max_abs_diff:.2e}, "
                          f"top-1 {report.top1_agreement:.0%}")
        check(report, kind.precision, kind.file_name)

    # Engines.

    def engine_steps(self) -> list[Step]:
        """Build and verify each planned engine; none where TensorRT is unavailable (the manifest then says how
        to finish on a GPU host)."""
        if self.engine_unavailable:
            return []
        steps = []
        for source in self.engine_sources:
            engine = kind_of(source.engine)
            steps += [Step(f"Building {engine.file_name} with TensorRT", partial(self.build_engine, source, engine)),
                      self.verify_step(engine)]
        return steps

    def build_engine(self, source: ArtifactKind, engine: ArtifactKind) -> None:
        self.engine_info[engine.file_name] = build_engine(
            self.out / source.file_name, self.out / engine.file_name, self.manifest.model.image_size, self.build,
            on_progress=self.say,
        )

    def engine_status(self, status: str, reason: str) -> EngineStatus:
        """The engine record: what was planned, what happened, and the commands that build the engines in the
        export directory, wherever it is copied (paths relative to it)."""
        engines = [s.engine for s in self.engine_sources]
        if not engines:
            return EngineStatus("skipped", "no engine requested")
        build = self.build
        if build.timing_cache and build.timing_cache.resolve().parent == self.out.resolve():
            build = replace(build, timing_cache=Path(build.timing_cache.name))
        p = build.profile
        commands = [f"smlp-export --from-onnx . --batch {p.min}:{p.opt}:{p.max} --workspace {build.workspace_mib} "
                    f"--opt-level {build.optimization_level}"]
        commands += [trtexec_command(Path(s.file_name), Path(s.engine), self.manifest.model.image_size, build)
                     for s in self.engine_sources]
        return EngineStatus(status, reason, commands, engines)

    # Accuracy.

    def evaluate(self, folder: LabeledFolder) -> None:
        """Top-1/top-5 of the PyTorch model and of every artifact on ``folder``, into the manifest."""
        manifest = self.manifest
        models = {"pytorch": TorchBackend(self.model, device="cpu").run}
        backends = {a.path: load_backend(self.out / a.path, model_info=manifest.model) for a in manifest.artifacts}
        for name, backend in backends.items():
            models[name] = partial(run_in_batches, backend.run, max_batch=backend.max_batch_size)
        indices = class_indices(folder.classes, manifest.labels, manifest.model.num_classes, sortable=False)
        try:
            scores = evaluate(models, folder, Preprocessor(manifest.preprocess), indices, quiet=self.quiet)
        finally:
            for backend in backends.values():
                backend.close()  # engines hold GPU memory
        manifest.model.accuracy = replace(scores.pop("pytorch"), dataset=str(folder.root))
        for artifact in manifest.artifacts:
            artifact.accuracy = scores[artifact.path]
