"""Opening an artifact: the file's format and the registry choose the backend, and check what was asked of it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...artifacts import FORMATS, format_of
from ...errors import Arg, ArtifactError, BackendUnavailableError, InputError
from ...manifest import ModelInfo
from .base import Backend, parse_device
from .registry import BACKENDS, LoadOptions, default_backend


def load_backend(
    path: str | Path,
    backend: str | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    model_info: ModelInfo | None = None,
    cuda_graphs: bool = False,
    plugin_libraries: Sequence[str | Path] = (),
    precision: str | None = None,
) -> Backend:
    """Open ``path`` with ``backend`` (by default the one registered first for its format).

    ``model_info`` (from the export's manifest) says which network a checkpoint holds; without it the
    checkpoint's own tensors tell. A backend that cannot open the file, a device it does not take or an option
    it does not take is an :class:`InputError`, never a silent switch to another backend or device; a backend
    that cannot run here is a :class:`BackendUnavailableError` with the install. ``cuda_graphs`` and
    ``plugin_libraries`` are TensorRT's (see :class:`~smlp_deploy.runtime.backends.tensorrt_backend.TensorRTBackend`);
    ``precision`` is the precision a backend that offers several computes in (OpenVINO: ``"fp32"``, the default,
    or ``"bf16"``; see :class:`~smlp_deploy.runtime.backends.openvino_backend.OpenVINOBackend`).
    """
    path = Path(path)
    check_artifact_path(path)
    found = format_of(path)
    if backend is None and found is not None:
        backend = default_backend(found).name
    info = BACKENDS.get(backend or "")
    if info is None:
        suffixes = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
        choices = [part for name in BACKENDS for part in (", ", Arg("backend", name))][1:]
        raise InputError(f"cannot tell the backend for {str(path)!r}: use a file ending in {suffixes}, or pass one of ",
                         *choices, parameter="backend")
    if found is None or found.name not in info.formats:
        actual = (f"; {found.description}s ({', '.join(found.suffixes)}) are run by backend "
                  f"{default_backend(found).name!r}" if found else "")
        raise InputError(f"backend {info.name!r} cannot open {str(path)!r}: it runs {info.runs}{actual}",
                         parameter="backend")
    options = LoadOptions(device, threads, model_info, cuda_graphs, tuple(Path(p) for p in plugin_libraries),
                          precision)
    for name in options.given():
        if name not in info.options:
            takes = [b.name for b in BACKENDS.values() if name in b.options]
            raise InputError(f"{name} applies to backends {', '.join(takes)}; {str(path)!r} runs on {info.name}",
                             parameter=name)
    if device is not None:
        parse_device(device, info.devices, info.name)
    if precision is not None and precision not in info.precisions:
        raise InputError(f"precision {precision!r} is not one backend {info.name!r} computes in: it takes "
                         f"{', '.join(info.precisions)}", parameter="precision")
    info.check_file(path)
    reason = info.unavailable()
    if reason:
        raise BackendUnavailableError(f"cannot open {str(path)!r} with backend {info.name!r}: {reason}")
    return info.load(path, options)


def check_artifact_path(path: Path) -> None:
    """An artifact must be an existing file; a directory gets the list of files in it that can be opened."""
    if path.is_dir():
        loadable = sorted(p.name for p in path.iterdir() if p.is_file() and format_of(p))
        hint = f"pass one of its files: {', '.join(loadable)}" if loadable else "it holds no file that can be opened"
        raise ArtifactError(f"artifact {str(path)!r} is a directory, not a model file; {hint}")
    if not path.is_file():
        raise ArtifactError(f"artifact {str(path)!r} does not exist")
