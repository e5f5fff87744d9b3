"""TensorRT engines, of either flavour: deserialized once, I/O by tensor name, buffers preallocated for the
profile's max batch.

Written against the Python API that TensorRT 10.x/11.x and TensorRT for RTX share (``tensorrt_flavours``), and
type-checked against TensorRT's stubs (tests).

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
* TensorRT for RTX: the engine's validity for this GPU and library is asked before it is loaded, the kernels its
  just-in-time step compiles are kept in a runtime cache file beside the engine, and CUDA graphs are the library's
  own (``tensorrt_rtx_api``).
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import Arg, ArtifactError, InputError, Words
from ...tensorrt_flavours import (
    TENSORRT_RTX,
    Flavour,
    TensorRTModule,
    check_engine_header,
    current_compute_capability,
    import_tensorrt,
)
from .base import Backend, DeviceTimes
from .tensorrt_rtx_api import RtxRuntime, check_validity

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

log = logging.getLogger(__name__)


class TensorRTMessages:
    """Where TensorRT's log goes: warnings and errors to ``logging`` (unless ``echo`` is off: the builder reports
    them itself, once each); while a thread captures, also into a list that holds that thread's messages only."""

    def __init__(self, echo: bool = True) -> None:
        self._local = threading.local()
        self.echo = echo

    def record(self, level: int, message: str) -> None:
        if level >= logging.WARNING:
            if self.echo:
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


def tensorrt_logger(api: TensorRTModule, messages: TensorRTMessages) -> trt.ILogger:
    """An ``ILogger`` of ``api``'s (the flavour's module) writing to ``messages``."""
    severity = api.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.INFO, severity.VERBOSE: logging.DEBUG}

    # mypy cannot take a base class from a module chosen at run time; TensorRTModule types every other use.
    class Logger(api.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            api.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            messages.record(levels.get(severity, logging.ERROR), msg)

    logger: trt.ILogger = Logger()
    return logger


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
    """An engine of ``flavour`` (TensorRT or TensorRT for RTX) on a CUDA device."""

    def __init__(self, path: str | Path, flavour: Flavour, *, device: str | None = None, cuda_graphs: bool = False,
                 plugin_libraries: Sequence[str | Path] = ()):
        import torch

        api = import_tensorrt(flavour)
        self.path = Path(path)
        self.flavour = flavour
        self.name = flavour.name
        self.source = self.path.name
        self.device: torch.device = cuda_device(device)
        self.cuda_graphs = cuda_graphs
        self.messages = TensorRTMessages()
        check_engine_header(self.path, flavour)
        plan = self.path.read_bytes()
        with torch.cuda.device(self.device), self.messages.capture() as messages:
            self._logger = tensorrt_logger(api, self.messages)  # held: TensorRT calls it for the runtime's lifetime
            self._runtime = api.Runtime(self._logger)
            self._runtime.engine_host_code_allowed = False
            self._plugins = load_plugin_libraries(self._runtime.get_plugin_registry(), plugin_libraries)
            if flavour is TENSORRT_RTX:
                check_validity(self._runtime, plan, self.path, current_compute_capability())
            engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ArtifactError(
                f"{flavour.title} {flavour.version()} on {torch.cuda.get_device_name(self.device)} cannot load engine "
                f"{str(self.path)!r}: {join_messages(messages)}. Engines are tied to the library version and GPUs "
                "they were built for: rebuild it with ",
                Words(f"smlp_deploy.export.build_from_onnx({str(self.path.parent)!r}, flavours=({flavour.name!r},))",
                      f"smlp-export --from-onnx {shlex.quote(str(self.path.parent))} --flavour {flavour.name}"),
            )
        self._engine: trt.ICudaEngine | None = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == api.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == api.TensorIOMode.OUTPUT]
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
        self.dtypes = {n: torch_dtype(api, engine.get_tensor_dtype(n), self.path) for n in (*inputs, *outputs)}
        self.api = api
        self._rtx = RtxRuntime(self.path, torch.cuda.get_device_name(self.device), cuda_graphs) \
            if flavour is TENSORRT_RTX else None
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
        import torch

        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return (f"{self.name} {self.flavour.version()} on {torch.cuda.get_device_name(self.device)} ({self.device}; "
                f"{self.path.name}, max batch {self.max_batch_size}{graphs})")

    def close(self) -> None:
        if self._rtx is not None:
            self._rtx.save_cache()
        self._local = threading.local()  # drops every thread's context and buffers
        self._engine = None
        super().close()


class _ThreadState:
    """One thread's execution context, stream, device buffers, pinned host buffers, CUDA events and graphs: after
    the first call at a batch size, the hot path allocates nothing."""

    def __init__(self, backend: TensorRTBackend):
        import torch

        self.backend = backend
        shapes = backend.max_shapes
        with torch.cuda.device(backend.device), backend.messages.capture() as messages:
            self.stream = torch.cuda.Stream(device=backend.device)
            context = backend.engine.create_execution_context() if backend._rtx is None else \
                backend._rtx.execution_context(backend.engine)
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
        self.sizes_run: set[int] = set()  # TensorRT for RTX compiles for a shape when it first runs

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
        if n not in self.sizes_run:
            self.sizes_run.add(n)
            if b._rtx is not None:
                b._rtx.save_cache()  # what the first run at this size compiled, for the next process
        return np.array(self.host_out[:n].numpy(), dtype=np.float32)

    def _compute(self, n: int) -> None:
        if not self.backend.cuda_graphs or self.backend._rtx is not None:  # TensorRT for RTX captures its own
            self._enqueue(n)
            return
        graph = self.graphs.get(n)
        if graph is None:
            graph = self.graphs[n] = self._capture(n)
        graph.replay()

    def _enqueue(self, n: int) -> None:
        b = self.backend
        with b.messages.capture() as messages:
            ok = self.context.set_input_shape(b.input_name, b.api.Dims([n, *b.sample_shape])) and \
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


def torch_dtype(api: TensorRTModule, dtype: trt.DataType, engine: Path) -> torch.dtype:
    """The torch dtype of an engine I/O tensor of TensorRT type ``dtype``."""
    import torch

    types = {api.DataType.FLOAT: torch.float32, api.DataType.HALF: torch.float16, api.DataType.INT8: torch.int8,
             api.DataType.INT32: torch.int32, api.DataType.BF16: torch.bfloat16}
    if dtype not in types:
        raise ArtifactError(f"{engine.name} has an input or output of TensorRT type {dtype}, which this runtime does "
                            "not handle (smlp-deploy engines take and return float32)")
    return types[dtype]
