"""TensorRT engines: deserialized once, I/O by tensor name, buffers preallocated for the profile's max batch.

Written against the Python API TensorRT 10.x and 11.x share, and type-checked against its stubs (tests).

* Threads: an execution context is not thread-safe, so each thread gets its own context, CUDA stream, device
  buffers and pinned host buffers (created on its first call); the engine is shared.
* Device: the engine, and every context, stream and buffer, is created with the backend's device current
  (``device="cuda:1"``), and every call runs with it current.
* CUDA graphs (``cuda_graphs=True``, for callers that run a few fixed batch sizes): the first call at a batch
  size runs the engine once (TensorRT finishes its deferred setup there), then captures ``execute_async_v3`` in
  a CUDA graph that later calls at that size replay; the copies stay outside the graph. TensorRT's Python API has
  no graph call of its own, so torch's ``CUDAGraph`` captures the thread's stream.
* Timing: CUDA events on the stream split each call as trtexec does, host-to-device copy, GPU compute, and
  device-to-host copy: :meth:`TensorRTBackend.last_times`.
* Messages: TensorRT's log goes to ``logging`` (stdout carries results), and a failed call reports the
  messages logged during that call on its thread, not every message the process ever logged.
* Plugins: no plugin library is loaded unless named in ``plugin_libraries``, and an engine's embedded host code
  is not run (``engine_host_code_allowed`` stays False).
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...environment import tensorrt_unavailable_reason
from ...errors import EXPORT_MODEL, Arg, ArtifactError, BackendUnavailableError, InputError, Words
from ...filekind import file_kind
from .base import Backend

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

log = logging.getLogger(__name__)
# Far below any engine: its header, its layers and the weights of even a tiny network take tens of kilobytes.
_MIN_ENGINE_BYTES = 1024


def check_engine_file(path: Path) -> None:
    """Refuse what cannot be an engine before TensorRT sees it: TensorRT reports a foreign file only as a failed
    deserialization, and only on a machine with a GPU. Binary data of unknown form is left to TensorRT."""
    kind = file_kind(path)
    size = path.stat().st_size
    if kind.name != "unknown" or size < _MIN_ENGINE_BYTES:
        what = kind.words if kind.name != "unknown" else f"{size} bytes, too small for an engine (truncated?)"
        raise ArtifactError(f"{str(path)!r} is not a TensorRT engine: it is {what}. Expected an engine built by ",
                            EXPORT_MODEL, " (engine.<precision>.plan) or trtexec --saveEngine")


@dataclass(frozen=True)
class DeviceTimes:
    """Milliseconds of one call on the GPU, from CUDA events on its stream: host-to-device copy, the engine's
    own compute, device-to-host copy (trtexec's H2D Latency, GPU Compute Time, D2H Latency)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float


class TensorRTMessages:
    """Where TensorRT's log goes: warnings and errors to ``logging``; while a thread captures, also into a list
    that holds that thread's messages only."""

    def __init__(self) -> None:
        self._local = threading.local()

    def record(self, level: int, message: str) -> None:
        if level >= logging.WARNING:
            log.log(level, "TensorRT: %s", message)
            captured: list[str] | None = getattr(self._local, "captured", None)
            if captured is not None:
                captured.append(message)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """The warnings and errors this thread's TensorRT calls log inside the ``with`` block."""
        outer: list[str] | None = getattr(self._local, "captured", None)
        captured: list[str] = []
        self._local.captured = captured
        try:
            yield captured
        finally:
            self._local.captured = outer


def tensorrt_logger(messages: TensorRTMessages) -> trt.ILogger:
    """A ``trt.ILogger`` writing to ``messages``."""
    import tensorrt as trt

    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL, trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.WARNING, trt.ILogger.Severity.INFO: logging.INFO,
              trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            messages.record(levels.get(severity, logging.ERROR), msg)

    return Logger()


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


def join_messages(messages: list[str]) -> str:
    return "; ".join(messages) or "TensorRT logged no message"


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, *, device: str | None = None, cuda_graphs: bool = False,
                 plugin_libraries: Sequence[str | Path] = ()):
        check_engine_file(Path(path))
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"cannot run TensorRT engine {str(path)!r}: {reason}")
        import tensorrt as trt
        import torch

        self.path = Path(path)
        self.source = self.path.name
        self.device: torch.device = cuda_device(device)
        self.cuda_graphs = cuda_graphs
        self.messages = TensorRTMessages()
        with torch.cuda.device(self.device), self.messages.capture() as messages:
            self._logger = tensorrt_logger(self.messages)  # held: TensorRT calls it for the runtime's lifetime
            self._runtime = trt.Runtime(self._logger)
            self._runtime.engine_host_code_allowed = False
            self._plugins = load_plugin_libraries(self._runtime.get_plugin_registry(), plugin_libraries)
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ArtifactError(
                f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(self.device)} cannot load engine "
                f"{str(self.path)!r}: {join_messages(messages)}. Engines are tied to the TensorRT version and GPU "
                "they were built with: rebuild it here with ",
                Words(f"smlp_deploy.export.build_from_onnx({str(self.path.parent)!r})",
                      f"smlp-export --from-onnx {shlex.quote(str(self.path.parent))}"),
            )
        self._engine: trt.ICudaEngine | None = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{self.path.name} has inputs {inputs} and outputs {outputs}; smlp-deploy engines "
                                "have one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        max_shape = engine.get_tensor_profile_shape(self.input_name, 0)[2]
        output_shape = engine.get_tensor_shape(self.output_name)
        max_batch, classes = max_shape[0], output_shape[len(output_shape) - 1]
        self.sample_shape = tuple(max_shape[i] for i in range(1, len(max_shape)))  # [3, H, W]
        self.max_shapes = {self.input_name: (max_batch, *self.sample_shape), self.output_name: (max_batch, classes)}
        self.max_batch_size, self.input_shape, self.num_classes = max_batch, self.sample_shape, classes
        self.dtypes = {n: torch_dtype(engine.get_tensor_dtype(n), self.path) for n in (*inputs, *outputs)}
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def engine(self) -> trt.ICudaEngine:
        if self._engine is None:
            raise ArtifactError(f"the TensorRT backend for {self.path.name} was closed")
        return self._engine

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            with self._lock:  # creating contexts concurrently is not documented as safe
                state = self._local.state = _ThreadState(self)
        return state

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._state().run(batch)

    def last_times(self) -> DeviceTimes | None:
        """The GPU time split of this thread's last call; None before its first."""
        state: _ThreadState | None = getattr(self._local, "state", None)
        return state.times if state is not None else None

    def describe(self) -> str:
        import tensorrt as trt
        import torch

        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return (f"tensorrt {trt.__version__} on {torch.cuda.get_device_name(self.device)} ({self.device}; "
                f"{self.path.name}, max batch {self.max_batch_size}{graphs})")

    def close(self) -> None:
        self._local = threading.local()  # drops every thread's context and buffers
        self._engine = None


class _ThreadState:
    """One thread's execution context, stream, device buffers, pinned host buffers, CUDA events and graphs: after
    the first call at a batch size, the hot path allocates nothing."""

    def __init__(self, backend: TensorRTBackend):
        import torch

        self.backend = backend
        shapes = backend.max_shapes
        with torch.cuda.device(backend.device), backend.messages.capture() as messages:
            self.stream = torch.cuda.Stream(device=backend.device)
            context = backend.engine.create_execution_context()
            if context is None:
                raise ArtifactError(f"TensorRT cannot create an execution context for {backend.path.name} on "
                                    f"{backend.device}: {join_messages(messages)}")
            self.context: trt.IExecutionContext = context
            self.device_buffers = {name: torch.empty(shape, dtype=backend.dtypes[name], device=backend.device)
                                   for name, shape in shapes.items()}
            self.host_in = torch.empty(shapes[backend.input_name], dtype=backend.dtypes[backend.input_name],
                                       pin_memory=True)
            self.host_out = torch.empty(shapes[backend.output_name], dtype=backend.dtypes[backend.output_name],
                                        pin_memory=True)
            for name, buffer in self.device_buffers.items():
                if not context.set_tensor_address(name, buffer.data_ptr()):
                    raise ArtifactError(f"TensorRT refused the buffer for {name!r} of {backend.path.name}: "
                                        f"{join_messages(messages)}")
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.times: DeviceTimes | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        b = self.backend
        n: int = batch.shape[0]
        self.host_in[:n].numpy()[...] = batch
        start, copied_in, computed, copied_out = self.events
        with torch.cuda.device(b.device), torch.cuda.stream(self.stream):
            start.record(self.stream)
            self.device_buffers[b.input_name][:n].copy_(self.host_in[:n], non_blocking=True)
            copied_in.record(self.stream)
            self._compute(n)
            computed.record(self.stream)
            self.host_out[:n].copy_(self.device_buffers[b.output_name][:n], non_blocking=True)
            copied_out.record(self.stream)
        self.stream.synchronize()
        # Event.elapsed_time is unannotated in torch: the annotations type its milliseconds.
        h2d: float = start.elapsed_time(copied_in)
        compute: float = copied_in.elapsed_time(computed)
        d2h: float = computed.elapsed_time(copied_out)
        self.times = DeviceTimes(h2d, compute, d2h)
        return np.array(self.host_out[:n].numpy(), dtype=np.float32)

    def _compute(self, n: int) -> None:
        if not self.backend.cuda_graphs:
            self._enqueue(n)
            return
        graph = self.graphs.get(n)
        if graph is None:
            graph = self.graphs[n] = self._capture(n)
        graph.replay()

    def _enqueue(self, n: int) -> None:
        import tensorrt as trt

        b = self.backend
        with b.messages.capture() as messages:
            ok = self.context.set_input_shape(b.input_name, trt.Dims([n, *b.sample_shape])) and \
                self.context.execute_async_v3(self.stream.cuda_stream)
        if not ok:
            raise ArtifactError(f"TensorRT failed to run {b.path.name} at batch {n}: {join_messages(messages)}")

    def _capture(self, n: int) -> torch.cuda.CUDAGraph:
        """A CUDA graph of the engine at batch ``n`` on this thread's stream, after one plain run."""
        import torch

        self._enqueue(n)
        graph = torch.cuda.CUDAGraph()
        try:
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                self._enqueue(n)
            finally:
                graph.capture_end()
        except RuntimeError as exc:
            raise ArtifactError(f"{self.backend.path.name} cannot be captured in a CUDA graph at batch {n} ({exc}); "
                                "load it with ", Arg("cuda_graphs", False), parameter="cuda_graphs") from exc
        return graph


def cuda_device(device: str | None) -> torch.device:
    """``device`` ("cuda", "cuda:1"; None: the current CUDA device) as a torch device with its index."""
    import torch

    try:
        chosen = torch.device(device or "cuda")
    except RuntimeError:
        chosen = None
    if chosen is None or chosen.type != "cuda":
        raise InputError(f"TensorRT engines run on CUDA devices: device must be 'cuda' or 'cuda:N', got {device!r}",
                         parameter="device")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if chosen.index is None else chosen.index
    if index >= count:
        raise InputError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), cuda:0 to "
                         f"cuda:{count - 1}", parameter="device")
    return torch.device("cuda", index)


def torch_dtype(dtype: trt.DataType, engine: Path) -> torch.dtype:
    """The torch dtype of an engine I/O tensor of TensorRT type ``dtype``."""
    import tensorrt as trt
    import torch

    types = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT8: torch.int8,
             trt.DataType.INT32: torch.int32, trt.DataType.BF16: torch.bfloat16}
    if dtype not in types:
        raise ArtifactError(f"{engine.name} has an input or output of TensorRT type {dtype}, which this runtime does "
                            "not handle (smlp-deploy engines take and return float32)")
    return types[dtype]
