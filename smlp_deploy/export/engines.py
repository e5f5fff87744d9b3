"""The engines of an earlier export: build those it planned from its ONNX files (``smlp-export --from-onnx``), or
verify, on a GPU, those built elsewhere (``smlp-export --verify-engines``). Both run as an export job over the
folder, so its manifest's engine records (``export.engine_plan``) are updated whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import ArtifactKind, engine_source
from ..errors import ArtifactError, BackendUnavailableError
from ..fileio import sha256_file
from ..manifest import MANIFEST_NAME, Artifact, Manifest
from ..tensorrt.builder import BuildOptions
from ..tensorrt.capabilities import engine_unavailable
from ..tensorrt.flavours import FLAVOURS
from .engine_plan import plan_engines
from .job import ExportJob, ExportResult
from .verification import VERIFICATION_NAME, VerificationSet


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
    job = ExportJob(out, build, quiet, engine_plans=plans, manifest=manifest, verification=verification)
    job.update(job.engine_steps())
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
        reason = engine_unavailable(kind)
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
    job = ExportJob(out, BuildOptions(), quiet, manifest=manifest, verification=verification)
    job.update([job.verify_step(kind) for _, kind in runnable])
    return job.result()


def _load_export(out: Path, parameter: str = "directory") -> tuple[Manifest, VerificationSet]:
    if not (out / MANIFEST_NAME).is_file() or not (out / VERIFICATION_NAME).is_file():
        raise ArtifactError(f"{out} is not an export directory (no {MANIFEST_NAME} and {VERIFICATION_NAME}): export "
                            "to it first", parameter=parameter)
    return Manifest.load(out / MANIFEST_NAME), VerificationSet.load(out / VERIFICATION_NAME)
