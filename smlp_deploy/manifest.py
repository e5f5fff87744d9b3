"""manifest.json: what an export directory holds and how well each artifact matches PyTorch.

The contract between the export and every tool that reads an export (Classifier, smlp-eval, smlp-bench,
serving). It is typed: :meth:`Manifest.load` checks every field and names the one that is wrong. The format
has a version; manifests of older versions are upgraded on load, newer ones are refused with the fix.

Versions: 1 (smlp-deploy 0.1.0); 2 adds ``model.seed`` (the seed of random weights) and ``engine.engines`` (the
engine files planned), and writes the engine commands relative to the export directory, so a copied export
stays valid; 3 (TensorRT for RTX) replaces ``engine`` by ``engines``, one record per TensorRT flavour, and records
for each engine its flavour, target compute capabilities, build seconds and whether a GPU has verified it; 4 (FP8)
adds ``fp8_calibration``, FP8's own calibration record beside INT8's ``calibration``. 5 adds
``backends`` to an artifact: its parity where another backend runs it in a precision of its own (OpenVINO bf16).
6 adds ``accuracy_budget``: the budget an INT8 or FP8 export was made within, and what its remedies did
(``budget_record``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .artifacts import ArtifactKind, engine_kind, kind_of
from .budget_record import BudgetRecord
from .environment import library_versions
from .errors import ArtifactError, SmlpDeployError
from .fileio import write_json_atomic
from .preprocess_config import PreprocessConfig
from .records import RecordError, from_json, to_json
from .tensorrt.flavours import TENSORRT

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 6
IMAGENET_LABELS = "imagenet-1k"  # ``labels`` value for the 1000 ImageNet classes in index order


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts (min..max) and the one it is tuned for (opt)."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise SmlpDeployError(f"batch profile needs 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}",
                                  parameter="profile")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1:8:32"`` -> BatchProfile(1, 8, 32)."""
        try:
            lo, opt, hi = (int(v) for v in text.split(":"))
        except ValueError:
            raise SmlpDeployError(f"batch profile {text!r} is not of the form min:opt:max (e.g. 1:8:32)",
                                  parameter="profile") from None
        return cls(lo, opt, hi)

    def shapes(self, image_size: int) -> tuple[tuple[int, ...], ...]:
        return tuple((b, 3, image_size, image_size) for b in (self.min, self.opt, self.max))


@dataclass(frozen=True)
class ParityReport:
    """Agreement of an artifact's logits with PyTorch's over ``n_inputs`` images.

    ``cosine`` is the worst per-image cosine similarity; ``top5_agreement`` the mean overlap of the two top-5
    sets; ``rel_max_abs_diff`` is ``max_abs_diff`` divided by the largest reference logit magnitude.
    """

    max_abs_diff: float
    mean_abs_diff: float
    rel_max_abs_diff: float
    cosine: float
    top1_agreement: float
    top5_agreement: float
    n_inputs: int


@dataclass(frozen=True)
class BackendParity:
    """An artifact run by ``backend`` computing in ``precision`` (OpenVINO on the CPU: fp32, bf16), against
    ``reference`` ("pytorch", or "onnxruntime": the same graph on ONNX Runtime, for INT8 Q/DQ forms), held to the
    thresholds of ``thresholds`` (a precision of export/parity.py). Kernels differ by CPU, so the CPU is named."""

    backend: str
    precision: str
    reference: str
    thresholds: str
    parity: ParityReport
    version: str
    cpu: str


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float
    n_images: int
    dataset: str | None = None  # the labeled folder, recorded once with the model's own accuracy


@dataclass(frozen=True)
class Checkpoint:
    path: str
    sha256: str


@dataclass
class ModelInfo:
    name: str  # registered variant name, smlpnet_tiny
    variant: str  # its short name, tiny
    num_classes: int
    image_size: int
    params: int
    macs: int
    checkpoint: Checkpoint | None  # None: random weights
    seed: int | None = None  # the seed of random weights (format 2; None in older manifests)
    accuracy: Accuracy | None = None


@dataclass(frozen=True)
class GpuRecord:
    name: str
    compute_capability: str


@dataclass
class Artifact:
    """One verified file of the export; ``path`` is its name inside the export directory."""

    path: str
    format: str
    precision: str
    sha256: str
    bytes: int
    parity: ParityReport | None = None
    accuracy: Accuracy | None = None
    target: str | None = None  # INT8: the quantization target the Q/DQ form is for
    float_precision: str | None = None  # INT8: the precision of the float parts
    profile: BatchProfile | None = None  # engines: the batch profile
    tensorrt_version: str | None = None  # engines: the version of their flavour's library
    gpu: GpuRecord | None = None  # engines: the GPU that built them (TensorRT) or verified them (TensorRT for RTX)
    flavour: str | None = None  # engines: tensorrt | tensorrt-rtx
    compute_capabilities: list[str] | None = None  # engines: the GPUs they run on
    build_seconds: float | None = None
    status: str | None = None  # engines: VERIFIED, or UNVERIFIED until a GPU has checked their parity
    backends: list[BackendParity] | None = None  # ONNX: its parity on backends that choose their own precision

    @property
    def kind(self) -> ArtifactKind | None:
        return kind_of(self.path)

    def parity_on(self, backend: str, precision: str) -> BackendParity | None:
        """Its recorded parity on ``backend`` computing in ``precision``, if the export measured it."""
        return next((c for c in self.backends or [] if (c.backend, c.precision) == (backend, precision)), None)

    def unmeasured_on(self, backend: str, precision: str) -> str | None:
        """Why ``backend`` computing in ``precision`` (not the artifact's own) is unverified, to follow a sentence
        naming the run; None where it is the artifact's precision or the export measured it."""
        if precision == self.precision or self.parity_on(backend, precision) is not None:
            return None
        return "whose parity its export did not measure: re-export with smlp-export --openvino to check and record it"


VERIFIED = "verified"  # an engine's parity was checked on a GPU, against the PyTorch logits of the export
UNVERIFIED = "built, not yet verified on a GPU"


@dataclass
class EngineStatus:
    """What became of one TensorRT flavour's engines in an export."""

    flavour: str
    status: str  # built | skipped
    reason: str
    commands: list[str] = field(default_factory=list)  # to finish on a GPU host, run in the export directory
    engines: list[str] = field(default_factory=list)  # the engine files the export planned


@dataclass
class SimplifyRecord:
    applied: bool
    note: str


@dataclass
class CalibrationRecord:
    dir: str
    method: str
    settings: dict[str, Any]
    seed: int
    samples_requested: int
    samples: int
    skipped: int
    cache: str
    cache_reused: bool
    targets: list[str]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Manifest:
    model: ModelInfo
    preprocess: PreprocessConfig
    labels: str | list[str]  # IMAGENET_LABELS, or one name per class
    artifacts: list[Artifact] = field(default_factory=list)
    engines: list[EngineStatus] = field(default_factory=list)  # one per TensorRT flavour the export planned for
    simplify: SimplifyRecord | None = None
    calibration: CalibrationRecord | None = None  # INT8's
    fp8_calibration: CalibrationRecord | None = None
    accuracy_budget: BudgetRecord | None = None  # format 6: the budget INT8 and FP8 were made within
    versions: dict[str, str | None] = field(default_factory=library_versions)
    created: str = field(default_factory=_now)
    format_version: int = FORMAT_VERSION

    def artifact(self, name: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.path == name), None)

    def engine_status(self, flavour: str) -> EngineStatus | None:
        return next((e for e in self.engines if e.flavour == flavour), None)

    def record(self, artifact: Artifact) -> None:
        """Add ``artifact``, replacing an earlier record of the same file (re-runs into one directory)."""
        self.artifacts = [a for a in self.artifacts if a.path != artifact.path] + [artifact]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        write_json_atomic(path, to_json(self))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and check a manifest; errors name the file, the field and what to do."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"manifest {str(path)!r} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"manifest {str(path)!r} is not a JSON object")
        version = data.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ArtifactError(
                f"manifest {str(path)!r} has format version {version}, written by a newer smlp-deploy; this one "
                f"reads versions 1 to {FORMAT_VERSION}: upgrade smlp-deploy (pip install -U smlp-deploy)"
            )
        if version not in _UPGRADES and version != FORMAT_VERSION:
            raise ArtifactError(f"manifest {str(path)!r} has no valid format_version ({version!r}): re-export it")
        while data["format_version"] != FORMAT_VERSION:
            data = _UPGRADES[data["format_version"]](data)
        try:
            manifest = from_json(cls, data)
        except RecordError as exc:
            raise ArtifactError(f"manifest {str(path)!r} is malformed at {exc}: re-export it") from None
        manifest._check_names(path)
        return manifest

    def _check_names(self, path: Path) -> None:
        """The files of the export are named by name alone, so every reader stays inside its folder (a crafted
        ``../../x`` or ``/etc/x`` is refused); a planned engine is an engine file of the artifact table. The
        calibration records' ``dir`` and ``cache``, the checkpoint's path and the engine commands are what the
        export was given or prints, read by no tool, and may name any path."""
        names = [(f"artifacts[{i}].path", a.path, False) for i, a in enumerate(self.artifacts)] + [
            (f"engines[{i}].engines[{j}]", name, True) for i, e in enumerate(self.engines)
            for j, name in enumerate(e.engines)]
        for where, name, engine in names:
            kind = kind_of(name) if is_file_name(name) else None
            if not is_file_name(name) or (engine and (kind is None or not kind.is_engine)):
                what = "an engine file an export writes" if engine else "the name of a file inside its export folder"
                raise ArtifactError(f"manifest {str(path)!r} names {name!r} at {where}, which is not {what}: a "
                                    "manifest lists the files of its own folder by name (model.onnx); re-export it")


def is_file_name(name: str) -> bool:
    """Whether ``name`` names a file in a folder by name alone: no folder part, on POSIX or Windows, nor . or .."""
    return name not in ("", ".", "..") and PurePosixPath(name).name == name == PureWindowsPath(name).name \
        and "\0" not in name


def _from_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 lacks the seed of random weights and the planned engines (its ``smlp-export --from-onnx`` built
    one per ONNX file that has an engine kind); its engine commands hold the paths the export ran at."""
    kinds = [kind_of(a.get("path", "")) for a in data.get("artifacts", []) if isinstance(a, dict)]
    planned = [engine_kind(kind, TENSORRT).file_name for kind in kinds if kind and kind.builds_engines]
    engine = {"engines": planned, **data.get("engine", {})}
    return {**data, "format_version": 2, "model": {"seed": None, **data.get("model", {})}, "engine": engine}


def _from_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 2 knew one flavour, TensorRT: its one engine record becomes that flavour's, and its engines (built on
    the GPU they were verified on) are verified ones."""
    data = dict(data)
    engine = data.pop("engine", None)
    planned = isinstance(engine, dict) and bool(engine.get("engines"))
    engines = [{"flavour": "tensorrt", **engine}] if planned else []
    artifacts = [{**a, "flavour": "tensorrt", "status": VERIFIED} if isinstance(a, dict) and a.get("format") ==
                 "tensorrt" else a for a in data.get("artifacts", [])]
    return {**data, "format_version": 3, "engines": engines, "artifacts": artifacts}


def _from_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Format 3 had no FP8: nothing to fill in."""
    return {**data, "format_version": 4}


def _from_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Format 4 is format 5 without the optional ``backends`` of an artifact."""
    return {**data, "format_version": 5}


def _from_v5(data: dict[str, Any]) -> dict[str, Any]:
    """Format 5 is format 6 without the optional ``accuracy_budget``."""
    return {**data, "format_version": 6}


_UPGRADES = {1: _from_v1, 2: _from_v2, 3: _from_v3, 4: _from_v4, 5: _from_v5}
