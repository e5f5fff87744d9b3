"""The one table of runtime backends: per backend its name, the file formats it opens, the load options it
takes, whether it can run here (and the install if not), and its loader.

The factory, the benchmark, the command lines' ``--backend`` choices and ``smlp-doctor`` all read this table, so
a new backend is one entry here and one module beside it. Loaders import their library only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from ...artifacts import FORMATS, FileFormat, kind_of, onnx_artifact
from ...environment import import_problem
from ...errors import ArtifactError, InputError
from ...filekind import file_kind
from ...manifest import ModelInfo
from ...tensorrt.flavours import FLAVOURS, Flavour, check_engine_header
from .base import Backend


@dataclass(frozen=True)
class LoadOptions:
    """Everything a caller may ask of a backend when opening a file; each backend takes the fields its registry
    entry names (``device`` and ``model_info`` go to every backend)."""

    device: str | None = None
    threads: int | None = None  # CPU threads of one call
    model_info: ModelInfo | None = None  # the manifest's model: which network a checkpoint holds
    cuda_graphs: bool = False  # TensorRT: replay each batch size from a CUDA graph
    plugin_libraries: tuple[Path, ...] = ()  # TensorRT: plugin libraries to load (none by default)
    precision: str | None = None  # OpenVINO: the precision it computes in, one of its entry's ``precisions``

    def given(self) -> list[str]:
        """The backend-specific options set to something other than their default."""
        defaults = LoadOptions()
        return [f.name for f in fields(self) if f.name not in ("device", "model_info")
                and getattr(self, f.name) != getattr(defaults, f.name)]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    formats: tuple[str, ...]  # the file formats it opens; the first backend listed for a format is its default
    devices: tuple[str, ...]  # the kinds of device it takes ("cpu"; "cuda" for cuda and cuda:N), the first by default
    options: tuple[str, ...]  # the LoadOptions fields it takes beyond device and model_info
    unavailable: Callable[[], str | None]  # why it cannot run here, with the install; None when it can
    load: Callable[[Path, LoadOptions], Backend]
    check_file: Callable[[Path], None] = lambda path: None  # refuses a file it cannot be, before anything loads
    precisions: tuple[str, ...] = ()  # the precisions it can be asked to compute in (``precision``), its default first

    @property
    def runs(self) -> str:
        """What it opens, for messages: "ONNX models (.onnx)"."""
        return ", ".join(f"{FORMATS[f].description}s ({', '.join(FORMATS[f].suffixes)})" for f in self.formats)


def _load_onnxruntime(path: Path, options: LoadOptions) -> Backend:
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, device=options.device, threads=options.threads)


def _tensorrt_loader(flavour: Flavour) -> Callable[[Path, LoadOptions], Backend]:
    def load(path: Path, options: LoadOptions) -> Backend:
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, flavour, device=options.device, cuda_graphs=options.cuda_graphs,
                               plugin_libraries=options.plugin_libraries)

    return load


def _load_torch(path: Path, options: LoadOptions) -> Backend:
    from ...models.checkpoint import ModelArgs, infer_model_args
    from ...models.registry import create_model
    from .torch_backend import TorchBackend

    info = options.model_info
    args = ModelArgs(info.name, info.num_classes, info.image_size) if info is not None else infer_model_args(path)
    model = create_model(args.name, num_classes=args.num_classes, image_size=args.image_size, checkpoint=path)
    return TorchBackend(model, device=options.device)


def _load_openvino(path: Path, options: LoadOptions) -> Backend:
    from .openvino_backend import OpenVINOBackend

    return OpenVINOBackend(path, precision=options.precision, threads=options.threads)


def _check_onnx_file(path: Path) -> None:
    """Name what a file that cannot be an ONNX model is; ONNX Runtime says only "Protobuf parsing failed"."""
    kind = file_kind(path)
    if kind.name not in ("onnx", "unknown"):
        raise ArtifactError(f"{str(path)!r} is not an ONNX model: it is {kind.words}. Expected the "
                            ".onnx file of an export (model.onnx, model.fp16.onnx, ...)")


def _check_openvino_file(path: Path) -> None:
    """An ONNX model, and not the TensorRT form of INT8: without Q/DQ on the Adds that sum a Conv's output (which
    the CPU form has) OpenVINO 2026.4 computes it wrongly, logits at cosine 0.09 to PyTorch's on sMLPNet-T's
    verification photos, where the CPU form gives 0.9997 (tests/test_openvino.py, docs/cpu.md)."""
    _check_onnx_file(path)
    kind = kind_of(path)
    if kind is not None and kind.target == "tensorrt" and not kind.is_engine:
        raise InputError(f"{path.name} is the INT8 Q/DQ form for TensorRT, which OpenVINO does not compute correctly "
                         f"(its logits are unrelated to PyTorch's): open {onnx_artifact('int8', 'cpu').file_name}, "
                         "the CPU form (smlp-export --int8-target cpu or both)", parameter="backend")


def _importable(module: str, install: str) -> Callable[[], str | None]:
    def unavailable() -> str | None:
        problem = import_problem(module)
        return f"cannot import {problem}: {install}" if problem else None

    return unavailable


BACKENDS = {
    b.name: b
    for b in (
        BackendInfo("onnxruntime", ("onnx",), ("cpu", "cuda"), ("threads",),
                    _importable("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)"), _load_onnxruntime,
                    _check_onnx_file),
        *(BackendInfo(f.name, (f.name,), ("cuda",), ("cuda_graphs", "plugin_libraries"), f.run_unavailable,
                      _tensorrt_loader(f), partial(check_engine_header, flavour=f))
          for f in FLAVOURS.values()),
        BackendInfo("torch", ("checkpoint",), ("cpu", "cuda"), (), _importable("torch", "pip install torch"),
                    _load_torch),
        # FP32 by default: OpenVINO's own default on CPUs with bf16 is bf16, which no FP32 artifact was verified in.
        BackendInfo("openvino", ("onnx",), ("cpu",), ("threads", "precision"),
                    _importable("openvino", "pip install 'smlp-deploy[openvino]'"), _load_openvino,
                    _check_openvino_file, precisions=("fp32", "bf16")),
    )
}


PRECISION_CHOICES = list(dict.fromkeys(p for b in BACKENDS.values() for p in b.precisions))  # for --precision


def backend_info(name: str) -> BackendInfo | None:
    return BACKENDS.get(name)


def default_backend(file_format: FileFormat) -> BackendInfo:
    """The backend that opens files of ``file_format`` unless another is asked for."""
    return next(b for b in BACKENDS.values() if file_format.name in b.formats)
