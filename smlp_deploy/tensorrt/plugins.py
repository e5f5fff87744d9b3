"""TensorRT plugin libraries, of either flavour: none is loaded unless named (``plugin_libraries`` of the builder
and of the engine runner), and each named one must load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArtifactError, InputError

if TYPE_CHECKING:
    import tensorrt as trt


def load_plugin_libraries(registry: trt.IPluginRegistry, libraries: Sequence[str | Path]) -> list[object]:
    """Load each named plugin library into ``registry``; the handles must outlive what uses the plugins."""
    handles: list[object] = []
    for library in libraries:
        path = Path(library)
        if not path.is_file():
            raise InputError(f"TensorRT plugin library {str(path)!r} does not exist", parameter="plugin_libraries")
        handle = registry.load_library(str(path))
        if handle is None:
            raise ArtifactError(f"TensorRT could not load plugin library {str(path)!r} (its log says why)",
                                parameter="plugin_libraries")
        handles.append(handle)
    return handles
