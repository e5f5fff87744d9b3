"""The engines of an earlier export: build those it planned from its ONNX files (``smlp-export --from-onnx``), or
verify, on a GPU, those built elsewhere (``smlp-export --verify-engines``). Both run as an export job over the
folder, so its manifest's engine records (``export.engine_plan``) are updated whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..artifacts import ArtifactKind, engine_source
from ..errors import ArtifactError, BackendUnavailableError
from ..export_folder import ExportFolder
from ..fileio import FolderLock
from ..manifest import Artifact
from ..tensorrt.builder import BuildOptions
from ..tensorrt.capabilities import engine_unavailable
from ..tensorrt.flavours import FLAVOURS
from .engine_plan import plan_engines
from .job import ExportJob, ExportResult, stopped
from .verification import VerificationSet


def build_from_onnx(
    directory: str | Path, build: BuildOptions = BuildOptions(), *, flavours: tuple[str, ...] | None = None,
    quiet: bool = False,
) -> ExportResult:
    """Build the engines an earlier export in ``directory`` planned, with ``flavours`` (by default each planned
    flavour that can build here), verifying those a GPU here runs against the PyTorch logits recorded there: on
    a GPU host for TensorRT, anywhere for TensorRT for RTX. The other flavours' records stay as they were."""
    out = Path(directory)
    with _holding(out, "directory") as lock:  # from the first read on: no other export changes the folder meanwhile
        folder, verification = _open_export(out, "directory")
        manifest = folder.manifest
        planned = [name for status in manifest.engines for name in status.engines]
        listed = [a.kind for a in manifest.artifacts if a.kind is not None and a.kind.builds_engines]
        # The sources of the planned engines; an export that planned none offers every ONNX file TensorRT builds.
        sources = list(dict.fromkeys(engine_source(name) for name in planned)) if planned else listed
        for kind in sources:
            folder.artifact_path(kind.file_name)
        names = flavours or tuple(status.flavour for status in manifest.engines) or tuple(FLAVOURS)
        plans = [p for p in plan_engines(sources, flavours, build, require_engine=True)  # named ones must build here
                 if p.builds and p.flavour.name in names]
        if not plans:
            reasons = "; ".join(f"{FLAVOURS[n].title}: {FLAVOURS[n].build_unavailable()}" for n in names)
            raise BackendUnavailableError(f"cannot build the planned engines here ({reasons})", parameter="directory")
        job = ExportJob(out, build, quiet, engine_plans=plans, manifest=manifest, verification=verification, lock=lock)
        job.update(job.engine_steps())
    return job.result()


def verify_engines(export_dir: str | Path, *, quiet: bool = False) -> ExportResult:
    """On a GPU: run every engine of the export in ``directory`` that this GPU runs through the verification
    inputs, record its parity against the PyTorch logits recorded there, and mark it verified (on this GPU). The
    one command a GPU owner runs on engines built elsewhere (TensorRT for RTX builds them on any machine)."""
    out = Path(export_dir)
    with _holding(out, "export_dir") as lock:
        folder, verification = _open_export(out, "export_dir")
        engines = [(a, kind, flavour) for a in folder.manifest.artifacts
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
            folder.verified_path(artifact)
        job = ExportJob(out, BuildOptions(), quiet, manifest=folder.manifest, verification=verification, lock=lock)
        job.update([job.verify_step(kind) for _, kind in runnable])
    return job.result()


def _open_export(out: Path, parameter: str) -> tuple[ExportFolder, VerificationSet]:
    folder = ExportFolder.open(out, parameter=parameter)
    return folder, VerificationSet.load(folder.verification_path(parameter=parameter))


@contextmanager
def _holding(folder: Path, parameter: str) -> Iterator[FolderLock]:
    """The writer lock of ``folder``, an earlier export, for a job that reads it before it writes it (its engines):
    no other export changes it in between. A folder that does not exist is left to the reader's error."""
    lock = FolderLock(folder, parameter=parameter)
    if folder.is_dir():
        try:
            lock.acquire()
        except OSError as exc:
            raise stopped(lock, exc) from exc
    try:
        yield lock
    finally:
        lock.release()
