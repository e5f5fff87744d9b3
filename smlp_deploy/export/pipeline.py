"""The export job: PyTorch -> ONNX -> simplified -> FP16 / INT8 -> TensorRT engines, each artifact verified.

Every file is written atomically into one directory with ``manifest.json``; re-running into the same
directory replaces artifacts and their manifest records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError, BackendUnavailableError, SmlpDeployError
from ..evaluation import class_indices, evaluate
from ..fileio import sha256_file
from ..imagefolder import LabeledFolder
from ..models import count_macs, count_params, create_model, resolve_name
from ..progress import Steps, format_table
from ..runtime.backends import OnnxRuntimeBackend, TorchBackend
from ..runtime.preprocess import Preprocessor
from . import int8
from . import manifest as mf
from .onnx_graph import DEFAULT_OPSET, export_onnx, save_model, simplify
from .parity import ParityReport, check, compare
from .precision import convert_to_fp16
from .tensorrt_build import BuildOptions, build_engine, tensorrt_unavailable_reason, trtexec_command
from .verification import VERIFICATION_NAME, VerificationSet, run_in_batches

PRECISIONS = ("fp32", "fp16", "int8")
ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def engine_name(precision: str) -> str:
    return f"engine.{precision}.plan"


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    reports: dict[str, ParityReport] = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / mf.MANIFEST_NAME

    def summary(self) -> str:
        rows = []
        for a in self.manifest["artifacts"]:
            p = a.get("parity") or {}
            rows.append([
                a["path"], a["format"], a["precision"], f"{a['bytes'] / 2**20:.1f} MiB",
                f"{p['rel_max_abs_diff']:.1e}" if p else "-", f"{p['cosine']:.6f}" if p else "-",
                f"{p['top1_agreement']:.0%}" if p else "-", _percent(a.get("accuracy")),
            ])
        headers = ["artifact", "format", "precision", "size", "max|diff|/scale", "cosine", "top-1 agree", "accuracy"]
        table = format_table(headers, rows)
        engine = self.manifest["engine"]
        lines = [table, "", f"engine: {engine['status']}" + (f": {engine['reason']}" if engine["reason"] else "")]
        lines += [f"  {c}" for c in engine.get("commands", [])]
        return "\n".join(lines)


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
    parts are fp16. ``eval_dir`` (a labeled image folder) adds top-1/top-5 of the model and every artifact.
    Raises :class:`ParityError` when an artifact misses its precision's thresholds.
    """
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise SmlpDeployError(f"precisions must be among {PRECISIONS}, got {precisions}")
    if "int8" in precisions:
        if int8_options is None:
            raise SmlpDeployError("--int8 needs calibration images: pass --calib-dir DIR")
        int8_options.check()
    eval_folder = LabeledFolder.scan(eval_dir) if eval_dir else None
    name = resolve_name(variant)
    out = Path(out_dir or Path("exports") / name)
    engine_steps = 0 if tensorrt_unavailable_reason() else 2 * len(precisions)
    int8_steps = int8.STEPS + 2 * len(int8_options.targets) if "int8" in precisions else 0
    steps = Steps(total=4 + 2 * ("fp16" in precisions) + int8_steps + engine_steps + bool(eval_folder), quiet=quiet)

    with steps.step(f"Building {name} ({'checkpoint ' + str(checkpoint) if checkpoint else 'random weights'})"):
        torch.manual_seed(seed)
        model = create_model(name, num_classes=num_classes, image_size=image_size, checkpoint=checkpoint)
        verification = VerificationSet.create(model, model.preprocess, seed=seed)
    if "int8" in precisions:
        calib = int8.read_calibration_images(int8_options, model.preprocess, steps)
    out.mkdir(parents=True, exist_ok=True)
    verification.save(out / VERIFICATION_NAME)
    manifest = mf.new_manifest(
        _model_info(model, checkpoint), model.preprocess.to_dict(), labels or _default_labels(num_classes)
    )
    result = ExportResult(out, manifest)

    with steps.step(f"Exporting to ONNX (opset {opset})"):
        proto = export_onnx(model, out / ONNX_NAMES["fp32"], opset=opset)
    with steps.step("Simplifying with onnxsim"):
        if do_simplify:
            simplified = simplify(proto)
            proto = simplified.model
            manifest["simplify"] = {"applied": simplified.simplified, "note": simplified.note}
            save_model(proto, out / ONNX_NAMES["fp32"])
            steps.say(simplified.note)
        else:
            manifest["simplify"] = {"applied": False, "note": "skipped (--no-simplify)"}
    _verify_onnx(result, out / ONNX_NAMES["fp32"], "fp32", verification, steps)

    if "fp16" in precisions:
        with steps.step("Converting to mixed FP16 (float32 I/O)"):
            save_model(convert_to_fp16(proto), out / ONNX_NAMES["fp16"])
        _verify_onnx(result, out / ONNX_NAMES["fp16"], "fp16", verification, steps)

    if "int8" in precisions:
        manifest["calibration"] = int8.export_int8(
            out / ONNX_NAMES["fp32"], calib, model.preprocess, int8_options, fp16="fp16" in precisions, steps=steps,
            verify=lambda path, precision, **extra: _verify_onnx(result, path, precision, verification, steps, **extra),
        )

    build_engines(result, precisions, build, require_engine, steps)
    if eval_folder:
        with steps.step(f"Evaluating accuracy on {eval_folder.root} ({len(eval_folder.samples)} images)"):
            evaluate_export(result, model, eval_folder, quiet=quiet)
    mf.write_manifest(out, manifest)
    return result


def _model_info(model: torch.nn.Module, checkpoint: str | Path | None) -> dict[str, Any]:
    return {
        "name": model.variant,
        "variant": model.variant.removeprefix("smlpnet_"),
        "num_classes": model.num_classes,
        "image_size": model.image_size,
        "params": count_params(model),
        "macs": count_macs(model),
        "checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)} if checkpoint else None,
    }


def evaluate_export(result: ExportResult, model: torch.nn.Module, folder: LabeledFolder, *, quiet: bool) -> None:
    """Top-1/top-5 of the PyTorch model and of every artifact in the export on ``folder``, into the manifest."""
    from ..runtime.classifier import BACKEND_BY_SUFFIX, load_backend

    manifest = result.manifest
    models = {"pytorch": TorchBackend(model, device="cpu").run}
    backends = [load_backend(BACKEND_BY_SUFFIX[Path(e["path"]).suffix], result.out_dir / e["path"])
                for e in manifest["artifacts"]]
    for entry, backend in zip(manifest["artifacts"], backends):
        models[entry["path"]] = partial(run_in_batches, backend.run, max_batch=backend.max_batch_size)
    indices = class_indices(folder.classes, manifest["labels"], manifest["model"]["num_classes"])
    try:
        scores = evaluate(models, folder, Preprocessor(model.preprocess), indices, quiet=quiet)
    finally:
        for backend in backends:
            backend.close()  # engines hold GPU memory
    manifest["model"]["accuracy"] = {"dataset": str(folder.root), **scores.pop("pytorch").to_dict()}
    for entry in manifest["artifacts"]:
        entry["accuracy"] = scores[entry["path"]].to_dict()


def _percent(accuracy: dict | None) -> str:
    return f"{accuracy['top1']:.2%} top-1" if accuracy else "-"


def _default_labels(num_classes: int) -> list[str] | str:
    return "imagenet-1k" if num_classes == 1000 else [str(i) for i in range(num_classes)]


def _verify_onnx(
    result: ExportResult, path: Path, precision: str, verification: VerificationSet, steps: Steps, **extra: Any
) -> None:
    with steps.step(f"Verifying {path.name} with ONNX Runtime against PyTorch"):
        inputs, reference = verification.for_precision(precision)
        logits = OnnxRuntimeBackend(path, device="cpu").run(inputs)
        report = record_artifact(result, path, "onnx", precision, compare(reference, logits), **extra)
        steps.say(f"cosine {report.cosine:.6f}, max|diff| {report.max_abs_diff:.2e}, top-1 {report.top1_agreement:.0%}")


def record_artifact(
    result: ExportResult, path: Path, fmt: str, precision: str, report: ParityReport, **extra: Any
) -> ParityReport:
    """Put the artifact in the manifest, then enforce the thresholds (the failing numbers stay on record)."""
    entry = {
        "path": path.name, "format": fmt, "precision": precision, "sha256": sha256_file(path),
        "bytes": path.stat().st_size, "parity": report.to_dict(), **extra,
    }
    mf.upsert_artifact(result.manifest, entry)
    result.reports[path.name] = report
    try:
        check(report, precision, path.name)
    except SmlpDeployError:
        mf.write_manifest(result.out_dir, result.manifest)
        raise
    return report


def build_engines(
    result: ExportResult, precisions: tuple[str, ...], build: BuildOptions, require_engine: bool, steps: Steps
) -> None:
    """Build one engine per precision, or record why not and how to finish on a GPU host."""
    out, manifest = result.out_dir, result.manifest
    image_size = manifest["model"]["image_size"]
    made = {a["path"] for a in manifest["artifacts"]}
    precisions = tuple(p for p in precisions if ONNX_NAMES[p] in made)  # --int8-target cpu makes no engine input
    if build.timing_cache is None:
        build = BuildOptions(build.profile, build.workspace_mib, build.optimization_level, out / "timing.cache")
    commands = [f"smlp-export --from-onnx {out}" + _build_flags(build)]
    commands += [trtexec_command(out / ONNX_NAMES[p], out / engine_name(p), image_size, build) for p in precisions]
    reason = tensorrt_unavailable_reason()
    if reason:
        manifest["engine"] = {"status": "skipped", "reason": reason, "commands": commands}
        steps.say(f"TensorRT engines skipped: {reason}")
        if require_engine:
            mf.write_manifest(out, manifest)
            raise BackendUnavailableError(f"--require-engine: no engine could be built ({reason})")
        return
    verification = VerificationSet.load(out / VERIFICATION_NAME)
    for precision in precisions:
        onnx_path, engine_path = out / ONNX_NAMES[precision], out / engine_name(precision)
        with steps.step(f"Building {engine_path.name} with TensorRT"):
            try:
                info = build_engine(onnx_path, engine_path, image_size, build, on_progress=steps.say)
            except SmlpDeployError as exc:
                manifest["engine"] = {"status": "failed", "reason": str(exc), "commands": commands}
                mf.write_manifest(out, manifest)
                raise
        with steps.step(f"Verifying {engine_path.name} against PyTorch"):
            from ..runtime.backends.tensorrt_backend import TensorRTBackend

            backend = TensorRTBackend(engine_path)
            inputs, reference = verification.for_precision(precision)
            logits = run_in_batches(backend.run, inputs, backend.max_batch_size)
            backend.close()
            record_artifact(
                result, engine_path, "tensorrt", precision, compare(reference, logits),
                profile=info.profile.to_dict(), tensorrt_version=info.tensorrt_version,
                gpu={"name": info.gpu_name, "compute_capability": info.compute_capability},
            )
    manifest["engine"] = {"status": "built", "reason": "", "commands": commands}


def _build_flags(build: BuildOptions) -> str:
    p = build.profile
    return f" --batch {p.min}:{p.opt}:{p.max} --workspace {build.workspace_mib} --opt-level {build.optimization_level}"


def build_from_onnx(directory: str | Path, build: BuildOptions = BuildOptions(), *, quiet: bool = False) -> ExportResult:
    """Finish an export on a GPU host: build engines for the ONNX artifacts an earlier export left in
    ``directory`` and verify them against the PyTorch logits recorded there."""
    out = Path(directory)
    manifest_path = out / mf.MANIFEST_NAME
    if not manifest_path.is_file() or not (out / VERIFICATION_NAME).is_file():
        raise ArtifactError(f"{out} is not an export directory: run smlp-export first (it needs manifest.json)")
    manifest = mf.read_manifest(manifest_path)
    precisions = tuple(a["precision"] for a in manifest["artifacts"] if a["path"] == ONNX_NAMES.get(a["precision"]))
    for entry in manifest["artifacts"]:
        if entry["format"] == "onnx" and sha256_file(out / entry["path"]) != entry["sha256"]:
            raise ArtifactError(f"{out / entry['path']} changed since it was verified (sha256 differs): re-export")
    result = ExportResult(out, manifest)
    build_engines(result, precisions, build, True, Steps(total=2 * len(precisions), quiet=quiet))
    mf.write_manifest(out, manifest)
    return result

