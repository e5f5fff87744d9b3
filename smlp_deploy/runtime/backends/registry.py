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

from ...artifacts import FORMATS, FileFormat
from ...environment import import_problem
from ...manifest import ModelInfo
from ...tensorrt_flavours import FLAVOURS, Flavour, check_engine_header
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

    def given(self) -> list[str]:
        """The backend-specific options set to something other than their default."""
        defaults = LoadOptions()
        return [f.name for f in fields(self) if f.name not in ("device", "model_info")
                and getattr(self, f.name) != getattr(defaults, f.name)]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    formats: tuple[str, ...]  # the file formats it opens; the first backend listed for a format is its default
    devices: tuple[str, ...]  # the kinds of device it runs on ("cpu", "cuda"), the first by default
    options: tuple[str, ...]  # the LoadOptions fields it takes beyond device and model_info
    unavailable: Callable[[], str | None]  # why it cannot run here, with the install; None when it can
    load: Callable[[Path, LoadOptions], Backend]
    check_file: Callable[[Path], None] = lambda path: None  # refuses a file it cannot be, before anything loads

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
    from ...models.checkpoint import infer_model_args
    from ...models.registry import create_model
    from .torch_backend import TorchBackend

    info = options.model_info
    if info is not None:
        args = {"name": info.name, "num_classes": info.num_classes, "image_size": info.image_size}
    else:
        args = infer_model_args(path)
    return TorchBackend(create_model(**args, checkpoint=path), device=options.device)


def _importable(module: str, install: str) -> Callable[[], str | None]:
    def unavailable() -> str | None:
        problem = import_problem(module)
        return f"cannot import {problem}: {install}" if problem else None

    return unavailable


BACKENDS = {
    b.name: b
    for b in (
        BackendInfo("onnxruntime", ("onnx",), ("cpu", "cuda"), ("threads",),
                    _importable("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)"), _load_onnxruntime),
        *(BackendInfo(f.name, (f.name,), ("cuda",), ("cuda_graphs", "plugin_libraries"), f.run_unavailable,
                      _tensorrt_loader(f), partial(check_engine_header, flavour=f))
          for f in FLAVOURS.values()),
        BackendInfo("torch", ("checkpoint",), ("cpu", "cuda"), (), _importable("torch", "pip install torch"),
                    _load_torch),
    )
}


def backend_info(name: str) -> BackendInfo | None:
    return BACKENDS.get(name)


def default_backend(file_format: FileFormat) -> BackendInfo:
    """The backend that opens files of ``file_format`` unless another is asked for."""
    return next(b for b in BACKENDS.values() if file_format.name in b.formats)
