"""A Triton Inference Server model repository from an export: ``<repo>/<name>/config.pbtxt`` + ``1/<artifact>``.

The classifier model serves one artifact: a TensorRT engine on Triton's TensorRT backend, an ONNX file on its
ONNX Runtime backend or (bf16 on CPUs) its OpenVINO backend, or either through :class:`~smlp_deploy.Classifier`
in the Python backend (what the tritonserver in nvidia-pytriton's wheel can run), with any of the toolkit's
backends. With ``image_input`` two more models let clients send encoded
images: ``<name>_preprocess`` (Python backend, the project's own preprocessing) and the ensemble
``<name>_image`` that chains it to the classifier. Each model folder is written whole or not at all.
"""

from __future__ import annotations

import re
import shutil
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from ..artifacts import ARTIFACTS, FORMATS, INPUT_NAME, OUTPUT_NAME, ArtifactKind
from ..errors import Arg, ArtifactError, InputError, OutputError, Words
from ..export_folder import ExportFolder
from ..fileio import sha256_file, staged_directory
from ..manifest import MANIFEST_NAME, Artifact, BatchProfile
from ..runtime.backends.registry import BACKENDS
from ..runtime.classifier import label_names
from ..version import __version__
from .config import DynamicBatching, EnsembleStep, InstanceGroup, ModelConfig, TensorConfig
from .python_models import ARTIFACT_PARAMETER, BACKEND_PARAMETER, IMAGE_INPUT, PRECISION_PARAMETER

LABELS_NAME = "labels.txt"
CHECKSUMS_NAME = "SHA256SUMS"  # in each version folder: ``sha256sum -c SHA256SUMS`` checks what is served
VERSION = "1"
DEFAULT_PROFILE = BatchProfile()  # for ONNX files, which take any batch: the engines' default profile
PLATFORMS = {"tensorrt": "tensorrt_plan", "onnx": "onnxruntime_onnx"}
ACCELERATOR_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
# Triton's OpenVINO backend takes one precision parameter, HINT_BF16 (openvino_backend, src/openvino.cc): bf16 where
# the server's CPU has it, else FP32 (OpenVINO keeps f32 for a bf16 hint there). It cannot pin FP32: without the
# hint OpenVINO's own default applies, which on CPUs with bf16 is bf16 (2026.4 on this AVX-512 BF16 EPYC).
OPENVINO_PARAMETERS = {"HINT_BF16": "YES", "PERFORMANCE_HINT": "LATENCY"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonModel:
    """One model folder of the repository; ``runtime`` is its platform or backend (tensorrt_plan,
    onnxruntime_onnx, python, ensemble)."""

    name: str
    role: str  # classifier | preprocess | ensemble
    runtime: str
    directory: Path
    config: ModelConfig


@dataclass(frozen=True)
class TritonRepository:
    """What :func:`write_triton_repository` wrote."""

    path: Path
    artifact: str
    sha256: str
    models: tuple[TritonModel, ...]

    @property
    def classifier(self) -> TritonModel:
        return next(m for m in self.models if m.role == "classifier")

    @property
    def image_model(self) -> TritonModel | None:
        """The ensemble that takes encoded images, if one was written."""
        return next((m for m in self.models if m.role == "ensemble"), None)

    @property
    def needs_smlp_deploy(self) -> bool:
        """Whether the server's Python must import smlp_deploy (the repository has Python-backend models)."""
        return any(m.runtime == "python" for m in self.models)


def write_triton_repository(
    export_dir: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    artifact: str = "model.onnx",
    backend: str | None = None,
    device: str | None = None,
    classifier_backend: str | None = None,
    precision: str | None = None,
    tensorrt_accelerator: bool = False,
    instances: int = 1,
    max_batch_size: int | None = None,
    max_queue_delay_us: int = 0,
    image_input: bool = True,
    overwrite: bool = False,
) -> TritonRepository:
    """Write the models serving ``artifact`` of the export in ``export_dir`` into the repository ``out``.

    ``name`` defaults to the model's (``smlpnet_tiny``). ``backend="python"`` serves the artifact through
    Classifier in Triton's Python backend instead of the artifact's own backend, opened with the toolkit's
    ``classifier_backend`` (default: the file's own) in ``precision`` (OpenVINO: fp32 or bf16).
    ``backend="openvino"`` serves an ONNX file on Triton's OpenVINO backend on the CPU, in bf16
    (``precision="bf16"``, the one precision that backend can be told; FP32 where the server's CPU has no bf16).
    ``device`` places ONNX models (``"cpu"``, the default, or ``"gpu"``; engines run on a GPU);
    ``tensorrt_accelerator`` lets ONNX Runtime hand a GPU model to TensorRT at the artifact's precision.
    ``max_batch_size`` defaults to the engine's profile maximum (32 for ONNX files, which take any batch). The
    dynamic batcher prefers an engine's opt and max batch sizes; for ONNX files, which have no tuned size, it
    prefers none and so takes all that is queued, up to ``max_batch_size``. It waits at most ``max_queue_delay_us``
    to form a batch (0: Triton's default; under load batches form from the queue anyway). Existing model folders
    of the same names are replaced only with ``overwrite``.
    """
    export_dir, out = Path(export_dir), Path(out)
    folder = ExportFolder.open(export_dir)
    manifest = folder.manifest
    entry, kind, path = _verified_artifact(folder, artifact)
    name = name or manifest.model.name
    _check_options(name, backend, device, kind, tensorrt_accelerator, instances, max_queue_delay_us)
    _check_runtime(backend, classifier_backend, precision, kind, entry, path)
    batch = _batch_limit(entry, max_batch_size)
    labels = label_names(manifest.labels)
    if any("\n" in label or "\r" in label for label in labels):
        raise ArtifactError(f"the labels in {folder.manifest_path} hold line breaks, which a Triton label file "
                            "cannot: re-export with labels on one line each")
    gpu = kind.is_engine or device == "gpu"
    # Preferred sizes cap batches: with [8, 64] and 64 clients the batcher sent batches of 7.3 images on average
    # (docs/benchmarks/serve_bench.py at commit 3caf437), since it takes the largest preferred size the queue
    # fills. So only an engine, tuned for its profile, gets them.
    preferred = tuple(sorted({batch.opt, batch.max})) if kind.is_engine else ()
    batching = DynamicBatching(preferred, max_queue_delay_us)
    group = InstanceGroup("KIND_GPU" if gpu else "KIND_CPU", instances)
    size, classes = manifest.model.image_size, manifest.model.num_classes
    input_ = TensorConfig(INPUT_NAME, "TYPE_FP32", (3, size, size), format="FORMAT_NCHW")
    logits = TensorConfig(OUTPUT_NAME, "TYPE_FP32", (classes,), label_filename=LABELS_NAME)

    if backend == "python":
        parameters = {ARTIFACT_PARAMETER: artifact, BACKEND_PARAMETER: classifier_backend,
                      PRECISION_PARAMETER: precision}
        classifier = ModelConfig(name, batch.max, (input_,), (logits,), backend="python", dynamic_batching=batching,
                                 instance_group=group, parameters={k: v for k, v in parameters.items() if v})
    elif backend == "openvino":
        classifier = ModelConfig(name, batch.max, (input_,), (logits,), backend="openvino",
                                 default_model_filename=artifact, dynamic_batching=batching, instance_group=group,
                                 parameters=OPENVINO_PARAMETERS)
    else:
        accelerator = ("tensorrt", {"precision_mode": ACCELERATOR_PRECISION[kind.precision]}) \
            if tensorrt_accelerator else None
        classifier = ModelConfig(name, batch.max, (input_,), (logits,), platform=PLATFORMS[kind.format],
                                 default_model_filename=artifact, dynamic_batching=batching, instance_group=group,
                                 accelerator=accelerator)
    models = [_model(out, "classifier", classifier)]
    if image_input:
        image = TensorConfig(IMAGE_INPUT, "TYPE_UINT8", (-1,))
        preprocessed = TensorConfig(INPUT_NAME, "TYPE_FP32", input_.dims)
        preprocess = ModelConfig(f"{name}_preprocess", batch.max, (replace(image, allow_ragged_batch=True),),
                                 (preprocessed,), backend="python",
                                 dynamic_batching=DynamicBatching((), max_queue_delay_us),
                                 instance_group=InstanceGroup("KIND_CPU", instances))
        steps = (EnsembleStep(preprocess.name, {IMAGE_INPUT: IMAGE_INPUT}, {INPUT_NAME: "preprocessed"}),
                 EnsembleStep(name, {INPUT_NAME: "preprocessed"}, {OUTPUT_NAME: OUTPUT_NAME}))
        ensemble = ModelConfig(f"{name}_image", batch.max, (image,), (logits,), platform="ensemble",
                               ensemble_steps=steps)
        models += [_model(out, "preprocess", preprocess), _model(out, "ensemble", ensemble)]

    existing = [m.directory for m in models if m.directory.exists()]
    if existing and not overwrite:
        raise OutputError(f"{', '.join(map(str, existing))} already exist(s) in the repository {out}: pass ",
                          Arg("overwrite"), " to replace them, or choose another name", parameter="overwrite")
    try:
        with ExitStack() as stack:  # every folder is staged first; they replace the old ones only if all succeed
            for model in models:
                stage = stack.enter_context(staged_directory(model.directory))
                _write_model(stage, model, export_dir, artifact, labels)
    except OSError as exc:
        raise OutputError(f"writing the Triton repository {out} stopped: {exc.strerror or exc} "
                          f"({exc.filename or out}); its model folders were left as they were") from exc
    return TritonRepository(out, artifact, entry.sha256, tuple(models))


def _verified_artifact(folder: ExportFolder, artifact: str) -> tuple[Artifact, ArtifactKind, Path]:
    """The manifest's record of ``artifact``, its kind and its path, once the file is known to be the one
    verified."""
    kind = ARTIFACTS.get(artifact)
    manifest = folder.manifest
    if kind is None:
        raise InputError(f"artifact {artifact!r} is not a file an export writes; this export holds "
                         f"{folder.listed()}", parameter="artifact")
    entry = manifest.artifact(artifact)
    if entry is None:
        planned = next((e for e in manifest.engines if artifact in e.engines and e.commands), None)
        steps = [c for c in planned.commands if not c.startswith("trtexec")] if planned else []
        how = (f"its engine was planned but not built ({planned.reason}); to build it, run in {folder.path}: "
               f"{' then '.join(steps)}" if planned else f"choose one of {folder.listed()}")
        raise ArtifactError(f"{artifact} is not part of the export in {folder.path}: {how}", parameter="artifact")
    return entry, kind, folder.verified_path(entry, parameter="artifact")


def _check_options(name: str, backend: str | None, device: str | None, kind: ArtifactKind,
                   tensorrt_accelerator: bool, instances: int, max_queue_delay_us: int) -> None:
    if not _NAME.fullmatch(name):
        raise InputError(f"model name {name!r} must start with a letter or digit and hold only letters, digits, "
                         "'_', '.' and '-'", parameter="name")
    if backend not in (None, "python", "openvino"):
        raise InputError(f"backend must be None (the artifact's own Triton backend), 'python' or 'openvino', got "
                         f"{backend!r}", parameter="backend")
    if backend == "openvino" and (kind.format != "onnx" or device == "gpu"):
        raise InputError(f"Triton's OpenVINO backend serves ONNX files on the CPU (got {kind.file_name}, device "
                         f"{device!r})", parameter="backend" if kind.format != "onnx" else "device")
    if device not in (None, "cpu", "gpu"):
        raise InputError(f"device must be 'cpu' or 'gpu', got {device!r}", parameter="device")
    if kind.is_engine and device == "cpu":
        raise InputError(f"{kind.file_name} is a {FORMATS[kind.format].description}, which runs on a GPU only: "
                         "leave device unset", parameter="device")
    if kind.format not in PLATFORMS and backend is None:
        raise InputError(f"{kind.file_name} is a {FORMATS[kind.format].description}, which Triton's own backends "
                         "do not load (its tensorrt_plan backend loads TensorRT engines only): serve it through "
                         "the Python backend (backend='python'), on a GPU instance", parameter="backend")
    if kind.target == "cpu" and device == "gpu":
        raise InputError(f"{kind.file_name} is the INT8 form for CPUs; on a GPU serve "
                         "model.int8.onnx (or engine.int8.plan)", parameter="device")
    if tensorrt_accelerator and (kind.format != "onnx" or backend == "python" or device != "gpu"):
        raise InputError("TensorRT acceleration applies to an ONNX file on Triton's ONNX Runtime backend with ",
                         Arg("device", "gpu"), f" (got {kind.file_name}{', backend python' if backend else ''}, "
                         f"device {device or 'unset'})",
                         parameter="tensorrt_accelerator")
    if tensorrt_accelerator and kind.precision not in ACCELERATOR_PRECISION:
        raise InputError(f"Triton's TensorRT accelerator for ONNX Runtime runs precision modes "
                         f"{', '.join(ACCELERATOR_PRECISION.values())}, not {kind.precision.upper()}: serve "
                         f"{kind.file_name} as a TensorRT engine instead (engine.{kind.precision}.plan, on a GPU of "
                         "compute capability 8.9 or later)", parameter="tensorrt_accelerator")
    for value, parameter, least in ((instances, "instances", 1), (max_queue_delay_us, "max_queue_delay_us", 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"{parameter} must be a whole number >= {least}, got {value!r}", parameter=parameter)


def _check_runtime(backend: str | None, classifier_backend: str | None, precision: str | None, kind: ArtifactKind,
                   entry: Artifact, path: Path) -> None:
    """What runs the artifact (``path``) inside the server: Triton's OpenVINO backend in bf16, or a Classifier's
    backend (in the Python backend) in a precision it takes; a precision whose parity the export did not record is
    warned about."""
    if backend is None and (classifier_backend or precision):
        raise InputError("classifier_backend and precision apply to ", Arg("backend", "python"), " (precision also to ",
                         Arg("backend", "openvino"), "): the artifact's own Triton backend runs it as it is",
                         parameter="classifier_backend" if classifier_backend else "precision")
    if backend == "openvino":
        if classifier_backend:
            raise InputError("classifier_backend applies to ", Arg("backend", "python"), parameter="classifier_backend")
        if precision != "bf16":
            raise InputError("Triton's OpenVINO backend cannot pin FP32: its one precision parameter is HINT_BF16, "
                             "and without it OpenVINO's own default on CPUs with bf16 (AVX-512 BF16, AMX) is bf16. "
                             "Pass ", Arg("precision", "bf16"), " (FP32 where the server's CPU has no bf16), or serve "
                             "FP32 on Triton's ONNX Runtime backend (the default) or with ", Arg("backend", "python"),
                             " ", Arg("classifier_backend", "openvino"), parameter="precision")
        BACKENDS["openvino"].check_file(path)
    if backend == "python" and (classifier_backend or precision):
        info = BACKENDS.get(classifier_backend or "")
        if classifier_backend and (info is None or kind.format not in info.formats):
            opens = [b.name for b in BACKENDS.values() if kind.format in b.formats]
            raise InputError(f"classifier_backend {classifier_backend!r} cannot open {kind.file_name}: choose one of "
                             f"{', '.join(opens)}", parameter="classifier_backend")
        if precision and (info is None or precision not in info.precisions):
            takes = [b.name for b in BACKENDS.values() if precision in b.precisions]
            raise InputError(f"precision {precision!r} applies to classifier_backend {', '.join(takes)}",
                             parameter="precision")
        if info is not None:
            info.check_file(path)
    runs_on = "openvino" if backend == "openvino" else classifier_backend
    offered = BACKENDS[runs_on].precisions if runs_on else ()
    computes = precision or (offered[0] if offered else None)
    unmeasured = entry.unmeasured_on(runs_on, computes) if runs_on and computes else None
    if unmeasured:
        warnings.warn(f"{entry.path} will be served on {runs_on} in {computes}, {unmeasured}", stacklevel=3)


def _batch_limit(entry: Artifact, max_batch_size: int | None) -> BatchProfile:
    """The profile the config follows: the engine's own (its max capped at ``max_batch_size``), or the default
    profile for ONNX files with ``max_batch_size`` as its max."""
    profile = entry.profile
    if max_batch_size is not None and (isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int)
                                       or max_batch_size < 1):
        raise InputError(f"max_batch_size must be a whole number >= 1, got {max_batch_size!r}",
                         parameter="max_batch_size")
    if profile is None:
        top = max_batch_size or DEFAULT_PROFILE.max
        return BatchProfile(1, min(DEFAULT_PROFILE.opt, top), top)
    if profile.min != 1:
        raise ArtifactError(f"{entry.path} was built for batches {profile.min}..{profile.max}; Triton sends batches "
                            "from 1: rebuild it with a profile starting at 1 (",
                            Words("BuildOptions(profile=BatchProfile(1, 8, 32))", "smlp-export --batch 1:8:32"), ")",
                            parameter="artifact")
    if max_batch_size and max_batch_size > profile.max:
        raise InputError(f"max_batch_size {max_batch_size} exceeds the {profile.max} that {entry.path} was built "
                         f"for: pass at most {profile.max}, or rebuild the engine", parameter="max_batch_size")
    top = max_batch_size or profile.max
    return BatchProfile(1, min(profile.opt, top), top)


def _model(out: Path, role: str, config: ModelConfig) -> TritonModel:
    return TritonModel(config.name, role, config.platform or config.backend or "", out / config.name, config)


_PYTHON_MODELS = {  # role: the class in python_models.py, what it does
    "classifier": ("ClassifierModel", "{artifact} through smlp_deploy.Classifier"),
    "preprocess": ("PreprocessModel", "encoded image bytes -> the model's input, by the export's preprocessing"),
}
_PYTHON_MODEL = '''"""Triton Python-backend model written by smlp-deploy {version}: {what}.

The server's Python must import smlp_deploy (pip install smlp-deploy, or point EXECUTION_ENV_PATH at an
environment that has it)."""

from smlp_deploy.serving.python_models import {cls} as TritonPythonModel  # noqa: F401
'''


def _write_model(stage: Path, model: TritonModel, export_dir: Path, artifact: str, labels: list[str]) -> None:
    version = stage / VERSION
    version.mkdir()
    (stage / "config.pbtxt").write_text(model.config.to_pbtxt())
    if model.role in ("classifier", "ensemble"):
        (stage / LABELS_NAME).write_text("".join(f"{label}\n" for label in labels))
    if model.role == "ensemble":
        return  # Triton wants the version folder, empty
    served = [MANIFEST_NAME] + ([artifact] if model.role == "classifier" else [])
    for file_name in served:
        shutil.copyfile(export_dir / file_name, version / file_name)
    if model.runtime == "python":
        cls, what = _PYTHON_MODELS[model.role]
        (version / "model.py").write_text(_PYTHON_MODEL.format(version=__version__, cls=cls,
                                                               what=what.format(artifact=artifact)))
    (version / CHECKSUMS_NAME).write_text("".join(f"{sha256_file(version / f)}  {f}\n" for f in served))
