"""TensorRT for RTX's own API, which TensorRT's does not have: target compute capabilities for the builder; the
engine's validity asked before loading, and a runtime cache, for the engine runner.

An RTX engine is compiled ahead of time for a set of compute capabilities and finished on the GPU by a
just-in-time step. :func:`check_validity` asks the runtime whether the engine can run on this GPU with this
library before it is deserialized, so an engine built for other GPUs or another TensorRT-RTX version is refused
with what differs and the command that rebuilds it. :class:`RtxRuntime` keeps what the just-in-time step
compiled in a file beside the engine, one per GPU model (the library refuses a cache from another GPU, driver or
version), written atomically whenever it grew, so a second process, or the next start, loads it instead of
compiling again.

TensorRT's stubs cannot type these calls (``ComputeCapability``, ``IRuntimeConfig``, ``IRuntimeCache``,
``get_engine_validity``): the names are checked against the installed ``tensorrt_rtx`` in the tests, and the
builder's are exercised by every CI build.
"""

from __future__ import annotations

import logging
import shlex
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import runtime_cache_of
from ..environment import gpu_slug
from ..errors import ArtifactError, InputError, Words
from ..fileio import write_bytes_atomic
from .flavours import TENSORRT_RTX, import_tensorrt

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

# EngineInvalidityDiagnostics flags and what each means for the user.
DIAGNOSES = {
    "VERSION_MISMATCH": "it was built by another TensorRT for RTX version",
    "UNSUPPORTED_CC": "it was not built for this GPU's compute capability",
    "OLD_CUDA_DRIVER": "the CUDA driver is older than the engine needs (update the NVIDIA driver)",
    "OLD_CUDA_RUNTIME": "the CUDA runtime is older than the engine needs",
    "INSUFFICIENT_GPU_MEMORY": "this GPU has too little memory for it",
    "MALFORMED_ENGINE": "the file is not a whole TensorRT for RTX engine",
    "CUDA_ERROR": "CUDA failed while checking it",
}


def rtx() -> Any:
    """The ``tensorrt_rtx`` module, for the names only it has."""
    return import_tensorrt(TENSORRT_RTX)


def supported_capabilities() -> tuple[str, ...]:
    """The compute capabilities the installed TensorRT for RTX can build for ("7.5", "8.0", ..., "12.1")."""
    members = rtx().ComputeCapability.__members__
    values = sorted(int(value) for name, value in members.items() if name.startswith("SM"))
    return tuple(f"{v // 10}.{v % 10}" for v in values)


def set_compute_capabilities(config: Any, capabilities: tuple[str, ...]) -> None:
    """Ask the builder ``config`` for exactly ``capabilities`` (checked against :func:`supported_capabilities`)."""
    enum = rtx().ComputeCapability
    config.num_compute_capabilities = len(capabilities)
    for index, capability in enumerate(capabilities):
        if not config.set_compute_capability(getattr(enum, "SM" + capability.replace(".", "")), index):
            raise InputError(f"{TENSORRT_RTX.title} refused compute capability {capability}",
                             parameter="compute_capabilities")


def check_validity(runtime: Any, plan: bytes, engine: Path, gpu: str) -> None:
    """Refuse ``engine`` (its bytes ``plan``) unless ``runtime`` says it can run here; a suboptimal engine (built
    for an older GPU than this one) loads with a warning."""
    api = rtx()
    validity, diagnostics = runtime.get_engine_validity(plan)
    if validity == api.EngineValidity.VALID:
        return
    flags = api.EngineInvalidityDiagnostics.__members__
    reasons = [text for name, text in DIAGNOSES.items() if name in flags and int(diagnostics) & int(flags[name])]
    folder = str(engine.parent)
    rebuild = Words(f"smlp_deploy.export.build_from_onnx({folder!r}, BuildOptions(compute_capabilities=({gpu!r},)), "
                    f"flavours=({TENSORRT_RTX.name!r},))",
                    f"smlp-export --from-onnx {shlex.quote(folder)} --flavour {TENSORRT_RTX.name} "
                    f"--compute-capability {gpu}")
    if validity == api.EngineValidity.SUBOPTIMAL:
        warnings.warn(f"{engine} runs on this GPU (compute capability {gpu}) but was not built for it, so it may run "
                      f"slower; to build it for this GPU: {rebuild.cli}", stacklevel=4)
        return
    raise ArtifactError(f"{TENSORRT_RTX.title} {TENSORRT_RTX.version()} cannot run {engine} on this GPU (compute "
                        f"capability {gpu}): {'; '.join(reasons) or f'diagnostics {int(diagnostics)}'}. Rebuild it "
                        "for this GPU: ", rebuild)


class RtxRuntime:
    """The runtime config every execution context of one RTX engine shares: the runtime cache of this GPU model
    (loaded from its file where one fits, saved when it grew) and, with ``cuda_graphs``, the library's own CUDA
    graphs, which NVIDIA advises over capturing streams by hand for dynamic shapes (``work-with-cuda-graphs``)."""

    def __init__(self, engine: Path, gpu_name: str, cuda_graphs: bool):
        self.path = runtime_cache_of(engine, gpu_slug(gpu_name))
        self.cuda_graphs = cuda_graphs
        self._lock = threading.Lock()
        self._saved = b""
        self._cache: Any = None
        self._config: Any = None  # held: the contexts use it and its cache for their lifetime
        self._unwritable = False

    def execution_context(self, cuda_engine: trt.ICudaEngine) -> trt.IExecutionContext | None:
        """An execution context of ``cuda_engine`` made with the shared runtime config."""
        context: trt.IExecutionContext | None = cuda_engine.create_execution_context(self._runtime_config(cuda_engine))
        return context

    def _runtime_config(self, cuda_engine: Any) -> Any:
        with self._lock:
            if self._config is None:
                config = cuda_engine.create_runtime_config()
                cache = config.create_runtime_cache()
                if self.path.is_file():
                    blob = self.path.read_bytes()
                    if cache.deserialize(blob):
                        self._saved = blob
                    else:
                        log.info("runtime cache %s was made for another GPU, driver or library: compiling anew",
                                 self.path)
                config.set_runtime_cache(cache)
                if self.cuda_graphs:
                    config.cuda_graph_strategy = rtx().CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
                self._cache, self._config = cache, config
            return self._config

    def save_cache(self) -> None:
        """Write the cache if it holds more than its file (atomically: readers see the old or the new file). A
        folder that cannot be written (a read-only image) costs the next start its compile, with one warning."""
        with self._lock:
            if self._cache is None or self._unwritable:
                return
            blob = bytes(self._cache.serialize())
            if not blob or blob == self._saved:
                return
            try:
                write_bytes_atomic(self.path, blob)
            except OSError as exc:
                self._unwritable = True
                warnings.warn(f"cannot keep the TensorRT for RTX runtime cache in {self.path} ({exc.strerror or exc})"
                              ": each start compiles its kernels again", stacklevel=3)
                return
            self._saved = blob
