"""Opening an artifact: the one place that maps a file to the backend that runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...artifacts import FORMATS, format_of
from ...errors import Arg, ArtifactError, InputError
from ...manifest import ModelInfo
from .base import Backend

BACKENDS = tuple(f.backend for f in FORMATS.values())


def load_backend(
    path: str | Path,
    backend: str | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    model_info: ModelInfo | None = None,
    cuda_graphs: bool = False,
    plugin_libraries: Sequence[str | Path] = (),
) -> Backend:
    """Open ``path`` with ``backend`` (by default the one its suffix names).

    ``model_info`` (from the export's manifest) says which network a checkpoint holds; without it the
    checkpoint's own tensors tell. A backend that cannot open the file is an :class:`InputError`, never a
    silent switch to another backend. ``cuda_graphs`` and ``plugin_libraries`` are TensorRT's (see
    :class:`~smlp_deploy.runtime.backends.tensorrt_backend.TensorRTBackend`).
    """
    path = Path(path)
    check_artifact_path(path)
    found = format_of(path)
    backend = backend or (found.backend if found else None)
    if backend not in BACKENDS:
        suffixes = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
        choices = [part for name in BACKENDS for part in (", ", Arg("backend", name))][1:]
        raise InputError(f"cannot tell the backend for {str(path)!r}: use a file ending in {suffixes}, or pass one of ",
                         *choices, parameter="backend")
    if found is None or found.backend != backend:
        wants = next(f for f in FORMATS.values() if f.backend == backend)
        actual = f"; {path.suffix} files are {found.description}s, run by backend {found.backend!r}" if found else ""
        raise InputError(f"backend {backend!r} cannot open {str(path)!r}: it runs {wants.description}s "
                         f"({', '.join(wants.suffixes)}){actual}", parameter="backend")
    for name, value in (("cuda_graphs", cuda_graphs), ("plugin_libraries", plugin_libraries)):
        if value and backend != "tensorrt":
            raise InputError(f"{name} applies to TensorRT engines; {str(path)!r} runs on {backend}", parameter=name)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, device=device, cuda_graphs=cuda_graphs, plugin_libraries=plugin_libraries)
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device, threads=threads)
    return _torch_backend(path, device, model_info)


def check_artifact_path(path: Path) -> None:
    """An artifact must be an existing file; a directory gets the list of files in it that can be opened."""
    if path.is_dir():
        loadable = sorted(p.name for p in path.iterdir() if p.is_file() and format_of(p))
        hint = f"pass one of its files: {', '.join(loadable)}" if loadable else "it holds no file that can be opened"
        raise ArtifactError(f"artifact {str(path)!r} is a directory, not a model file; {hint}")
    if not path.is_file():
        raise ArtifactError(f"artifact {str(path)!r} does not exist")


def _torch_backend(path: Path, device: str | None, model_info: ModelInfo | None) -> Backend:
    from ...models.checkpoint import infer_model_args
    from ...models.registry import create_model
    from .torch_backend import TorchBackend

    if model_info is not None:
        args = {"name": model_info.name, "num_classes": model_info.num_classes, "image_size": model_info.image_size}
    else:
        args = infer_model_args(path)
    return TorchBackend(create_model(**args, checkpoint=path), device=device)
