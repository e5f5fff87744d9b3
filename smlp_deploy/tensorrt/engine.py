"""A TensorRT engine, of either flavour, deserialized once and run from any thread: I/O by tensor name, buffers
preallocated for the profile's max batch.

Written against the Python API that TensorRT 10.x/11.x and TensorRT for RTX share (``tensorrt.flavours``), and
type-checked against TensorRT's stubs (tests).

* Threads: an execution context is not thread-safe, so a call borrows one, with its CUDA stream, device buffers
  and pinned host buffers, from a pool of at most ``max_contexts`` (made on demand; the engine is shared): more
  threads than that wait for one to come back, so a pool of 64 threads does not make 64 contexts, each with
  buffers for the profile's max batch and TensorRT's activation memory.
* Device: the engine, and every context, stream and buffer, is created with the engine's device current, and
  every call runs with it current.
* Batches below the profile's minimum (an engine built for ``--batch 8:8:32`` given one image) are padded up to
  it with copies of their last sample, and the padded rows dropped: the engine cannot run them otherwise.
* CUDA graphs (``cuda_graphs=True``, for callers that run a few fixed batch sizes): the first call at a batch
  size runs the engine once (TensorRT finishes its deferred setup there), then captures ``execute_async_v3`` in
  a CUDA graph that later calls at that size replay; the copies stay outside the graph. TensorRT's Python API has
  no graph call of its own, so torch's ``CUDAGraph`` captures the thread's stream.
* Timing: CUDA events on the stream split each call as trtexec does, host-to-device copy, GPU compute, and
  device-to-host copy: :meth:`Engine.last_times`.
* Messages: TensorRT's log goes to ``logging`` (stdout carries results), and a failed call reports the
  messages logged during that call on its thread, not every message the process ever logged.
* Plugins: no plugin library is loaded unless named in ``plugin_libraries``, and an engine's embedded host code
  is not run (``engine_host_code_allowed`` stays False).
* TensorRT for RTX: the engine's validity for this GPU and library is asked before it is loaded, the kernels its
  just-in-time step compiles are kept in a runtime cache file beside the engine, and CUDA graphs are the library's
  own (``tensorrt.rtx``).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from ..errors import Arg, ArtifactError, Words
from .flavours import (
    TENSORRT_RTX,
    Flavour,
    TensorRTModule,
    check_engine_header,
    current_compute_capability,
    import_tensorrt,
)
from .messages import TensorRTMessages, join_messages, tensorrt_logger
from .plugins import load_plugin_libraries
from .rtx import RtxRuntime, check_validity
from .times import DeviceTimes

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

# Contexts per engine: a bound, not a tuned figure (no GPU has measured it here). Concurrent contexts on one GPU add
# little throughput past a few, and each holds its own device memory.
MAX_CONTEXTS = 4
State = TypeVar("State")


class Pool(Generic[State]):
    """At most ``limit`` states, made by ``make`` on demand and lent to one caller at a time; a caller finding none
    free and the limit reached waits until one comes back."""

    def __init__(self, make: Callable[[], State], limit: int):
        self._make, self._limit = make, limit
        self._free: list[State] = []
        self._made = 0
        self._changed = threading.Condition()

    @property
    def made(self) -> int:
        return self._made

    @contextmanager
    def lend(self) -> Iterator[State]:
        with self._changed:
            self._changed.wait_for(lambda: self._free or self._made < self._limit)
            state = self._free.pop() if self._free else None
            if state is None:
                self._made += 1  # counted now, so concurrent callers respect the limit while it is made
        if state is None:
            try:
                state = self._make()
            except BaseException:
                with self._changed:
                    self._made -= 1
                    self._changed.notify()
                raise
        try:
            yield state
        finally:
            with self._changed:
                self._free.append(state)
                self._changed.notify()


def padded(batch: np.ndarray, minimum: int) -> np.ndarray:
    """``batch`` with copies of its last sample appended up to ``minimum`` rows (an engine profile's smallest
    batch); the caller keeps the first ``len(batch)`` rows of the result."""
    if len(batch) >= minimum:
        return batch
    rows = np.minimum(np.arange(minimum), len(batch) - 1)  # 0, 1, ..., n - 1, n - 1, ...
    grown: np.ndarray = batch[rows]
    return grown


class Engine:
    """The engine in ``path``, of ``flavour``, on the CUDA ``device`` (a torch device with its index)."""

    def __init__(self, path: Path, flavour: Flavour, device: torch.device, *, cuda_graphs: bool = False,
                 plugin_libraries: Sequence[str | Path] = (), max_contexts: int = MAX_CONTEXTS):
        import torch

        api = import_tensorrt(flavour)
        self.path, self.flavour, self.device, self.cuda_graphs = path, flavour, device, cuda_graphs
        self.messages = TensorRTMessages()
        check_engine_header(path, flavour)
        plan = path.read_bytes()
        with torch.cuda.device(device), self.messages.capture() as messages:
            self._logger = tensorrt_logger(api, self.messages)  # held: TensorRT calls it for the runtime's lifetime
            self._runtime = api.Runtime(self._logger)
            self._runtime.engine_host_code_allowed = False
            self._plugins = load_plugin_libraries(self._runtime.get_plugin_registry(), plugin_libraries)
            if flavour is TENSORRT_RTX:
                check_validity(self._runtime, plan, path, current_compute_capability())
            engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ArtifactError(
                f"{flavour.title} {flavour.version()} on {torch.cuda.get_device_name(device)} cannot load engine "
                f"{str(path)!r}: {join_messages(messages)}. Engines are tied to the library version and GPUs "
                "they were built for: rebuild it with ",
                Words(f"smlp_deploy.export.build_from_onnx({str(path.parent)!r}, flavours=({flavour.name!r},))",
                      f"smlp-export --from-onnx {shlex.quote(str(path.parent))} --flavour {flavour.name}"),
            )
        self._engine: trt.ICudaEngine | None = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == api.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == api.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{path.name} has inputs {inputs} and outputs {outputs}; smlp-deploy engines "
                                "have one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        min_shape, _, max_shape = engine.get_tensor_profile_shape(self.input_name, 0)
        output_shape = engine.get_tensor_shape(self.output_name)
        self.min_batch_size: int = min_shape[0]
        self.max_batch_size: int = max_shape[0]
        self.num_classes: int = output_shape[len(output_shape) - 1]
        self.sample_shape = tuple(max_shape[i] for i in range(1, len(max_shape)))  # [3, H, W]
        self.max_shapes = {self.input_name: (self.max_batch_size, *self.sample_shape),
                           self.output_name: (self.max_batch_size, self.num_classes)}
        self.dtypes = {n: torch_dtype(api, engine.get_tensor_dtype(n), path) for n in (*inputs, *outputs)}
        self.api = api
        self._rtx = RtxRuntime(path, torch.cuda.get_device_name(device), cuda_graphs) \
            if flavour is TENSORRT_RTX else None
        self._local = threading.local()  # each thread's last call's times
        self._max_contexts = max_contexts
        self._creating = threading.Lock()  # making contexts concurrently is not documented as safe
        self._pool = self._new_pool()

    def _new_pool(self) -> Pool[_ContextState]:
        def make() -> _ContextState:
            with self._creating:
                return _ContextState(self)

        return Pool(make, self._max_contexts)

    @property
    def cuda_engine(self) -> trt.ICudaEngine:
        if self._engine is None:
            raise ArtifactError(f"the TensorRT backend for {self.path.name} was closed")
        return self._engine

    @property
    def contexts(self) -> int:
        """The execution contexts made so far (at most ``max_contexts``)."""
        return self._pool.made

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` (float32, at most the profile's max batch; padded up to its min) on a context of the pool."""
        with self._pool.lend() as state:
            logits = state.run(padded(batch, self.min_batch_size))
            self._local.times = state.times
        return logits[: len(batch)]

    def last_times(self) -> DeviceTimes | None:
        """The GPU time split of this thread's last call; None before its first."""
        times: DeviceTimes | None = getattr(self._local, "times", None)
        return times

    def close(self) -> None:
        if self._rtx is not None:
            self._rtx.save_cache()
        self._pool = self._new_pool()  # drops every context and its buffers
        self._engine = None  # a later call fails making a context: "was closed"


class _ContextState:
    """One execution context with its stream, device buffers, pinned host buffers, CUDA events and graphs, used by
    one call at a time: after the first call at a batch size, the hot path allocates nothing."""

    def __init__(self, engine: Engine):
        import torch

        self.engine = engine
        shapes = engine.max_shapes
        with torch.cuda.device(engine.device), engine.messages.capture() as messages:
            self.stream = torch.cuda.Stream(device=engine.device)
            context = engine.cuda_engine.create_execution_context() if engine._rtx is None else \
                engine._rtx.execution_context(engine.cuda_engine)
            if context is None:
                raise ArtifactError(f"TensorRT cannot create an execution context for {engine.path.name} on "
                                    f"{engine.device}: {join_messages(messages)}")
            self.context: trt.IExecutionContext = context
            self.device_buffers = {name: torch.empty(shape, dtype=engine.dtypes[name], device=engine.device)
                                   for name, shape in shapes.items()}
            self.host_in = torch.empty(shapes[engine.input_name], dtype=engine.dtypes[engine.input_name],
                                       pin_memory=True)
            self.host_out = torch.empty(shapes[engine.output_name], dtype=engine.dtypes[engine.output_name],
                                        pin_memory=True)
            for name, buffer in self.device_buffers.items():
                if not context.set_tensor_address(name, buffer.data_ptr()):
                    raise ArtifactError(f"TensorRT refused the buffer for {name!r} of {engine.path.name}: "
                                        f"{join_messages(messages)}")
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.times: DeviceTimes | None = None  # of the last call
        self.sizes_run: set[int] = set()  # TensorRT for RTX compiles for a shape when it first runs

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        e = self.engine
        n: int = batch.shape[0]
        self.host_in[:n].numpy()[...] = batch
        start, copied_in, computed, copied_out = self.events
        with torch.cuda.device(e.device), torch.cuda.stream(self.stream):
            start.record(self.stream)
            self.device_buffers[e.input_name][:n].copy_(self.host_in[:n], non_blocking=True)
            copied_in.record(self.stream)
            self._compute(n)
            computed.record(self.stream)
            self.host_out[:n].copy_(self.device_buffers[e.output_name][:n], non_blocking=True)
            copied_out.record(self.stream)
        self.stream.synchronize()
        # Event.elapsed_time is unannotated in torch: the annotations type its milliseconds.
        h2d: float = start.elapsed_time(copied_in)
        compute: float = copied_in.elapsed_time(computed)
        d2h: float = computed.elapsed_time(copied_out)
        if n not in self.sizes_run:
            self.sizes_run.add(n)
            if e._rtx is not None:
                e._rtx.save_cache()  # what the first run at this size compiled, for the next process
        self.times = DeviceTimes(h2d, compute, d2h)
        return np.array(self.host_out[:n].numpy(), dtype=np.float32)

    def _compute(self, n: int) -> None:
        if not self.engine.cuda_graphs or self.engine._rtx is not None:  # TensorRT for RTX captures its own
            self._enqueue(n)
            return
        graph = self.graphs.get(n)
        if graph is None:
            graph = self.graphs[n] = self._capture(n)
        graph.replay()

    def _enqueue(self, n: int) -> None:
        e = self.engine
        with e.messages.capture() as messages:
            ok = self.context.set_input_shape(e.input_name, e.api.Dims([n, *e.sample_shape])) and \
                self.context.execute_async_v3(self.stream.cuda_stream)
        if not ok:
            raise ArtifactError(f"TensorRT failed to run {e.path.name} at batch {n}: {join_messages(messages)}")

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
            raise ArtifactError(f"{self.engine.path.name} cannot be captured in a CUDA graph at batch {n} ({exc}); "
                                "load it with ", Arg("cuda_graphs", False), parameter="cuda_graphs") from exc
        return graph


def torch_dtype(api: TensorRTModule, dtype: trt.DataType, engine: Path) -> torch.dtype:
    """The torch dtype of an engine I/O tensor of TensorRT type ``dtype``."""
    import torch

    types = {api.DataType.FLOAT: torch.float32, api.DataType.HALF: torch.float16, api.DataType.INT8: torch.int8,
             api.DataType.INT32: torch.int32, api.DataType.BF16: torch.bfloat16}
    if dtype not in types:
        raise ArtifactError(f"{engine.name} has an input or output of TensorRT type {dtype}, which this runtime does "
                            "not handle (smlp-deploy engines take and return float32)")
    return types[dtype]
