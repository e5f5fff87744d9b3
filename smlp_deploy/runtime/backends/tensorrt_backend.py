"""TensorRT engines: deserialized once, I/O by tensor name, buffers preallocated for the profile's max batch.

Thread safety: an execution context is not thread-safe, so each thread gets its own context, CUDA stream and
buffers (created on its first call); the engine is shared.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ...environment import tensorrt_unavailable_reason
from ...errors import ArtifactError, BackendUnavailableError
from .base import Backend

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, *, device: str | None = None):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"cannot run TensorRT engine {str(path)!r}: {reason}")
        import tensorrt as trt
        import torch

        self.path = Path(path)
        self.source = self.path.name
        self.device = torch.device(device or "cuda")
        self._torch = torch
        self._logger = _recording_logger(trt)
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            gpu = torch.cuda.get_device_name(self.device)
            raise ArtifactError(
                f"TensorRT {trt.__version__} on {gpu} cannot load engine {str(self.path)!r}: "
                f"{'; '.join(self._logger.errors) or 'deserialization failed'}. Engines are tied to the TensorRT "
                f"version and GPU they were built with: rebuild it here with "
                f"smlp-export --from-onnx {self.path.parent}"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input_name = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        max_shape = tuple(int(d) for d in max_shape)
        self.max_batch_size, self.input_shape = max_shape[0], max_shape[1:]
        self.num_classes = int(tuple(self.engine.get_tensor_shape(self.output_name))[-1])
        self._dtypes = {n: _torch_dtype(torch, trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _state(self) -> "_ThreadState":
        state = getattr(self._local, "state", None)
        if state is None:
            with self._lock:  # creating contexts concurrently is not documented as safe
                state = self._local.state = _ThreadState(self)
        return state

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._state().run(batch)

    def describe(self) -> str:
        import tensorrt as trt

        gpu = self._torch.cuda.get_device_name(self.device)
        return f"tensorrt {trt.__version__} on {gpu} ({self.path.name}, max batch {self.max_batch_size})"

    def close(self) -> None:
        self._local = threading.local()
        self.engine = None


class _ThreadState:
    """One thread's execution context, stream, device buffers and pinned host buffers: the hot path allocates
    nothing."""

    def __init__(self, backend: TensorRTBackend):
        torch = backend._torch
        self.backend = backend
        self.stream = torch.cuda.Stream(device=backend.device)
        self.context = backend.engine.create_execution_context()
        shapes = {
            backend.input_name: (backend.max_batch_size, *backend.input_shape),
            backend.output_name: (backend.max_batch_size, backend.num_classes),
        }
        self.device_buffers = {
            name: torch.empty(shape, dtype=backend._dtypes[name], device=backend.device)
            for name, shape in shapes.items()
        }
        self.host_in = torch.empty(shapes[backend.input_name], dtype=backend._dtypes[backend.input_name]).pin_memory()
        self.host_out = torch.empty(shapes[backend.output_name], dtype=torch.float32).pin_memory()
        for name, buffer in self.device_buffers.items():
            self.context.set_tensor_address(name, buffer.data_ptr())

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch, b = self.backend._torch, self.backend
        n = batch.shape[0]
        d_in, d_out = self.device_buffers[b.input_name], self.device_buffers[b.output_name]
        self.host_in[:n].numpy()[...] = batch
        with torch.cuda.stream(self.stream):
            d_in[:n].copy_(self.host_in[:n], non_blocking=True)
            self.context.set_input_shape(b.input_name, (n, *b.input_shape))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactError(f"TensorRT failed to execute {b.path.name}: {'; '.join(b._logger.errors)}")
            self.host_out[:n].copy_(d_out[:n], non_blocking=True)
        self.stream.synchronize()
        return self.host_out[:n].numpy().copy()


def _torch_dtype(torch, np_dtype):
    return {np.float32: torch.float32, np.float16: torch.float16, np.int8: torch.int8}[np.dtype(np_dtype).type]


def _recording_logger(trt):
    """A TensorRT logger that passes warnings to ``logging`` (stdout is for results) and keeps error messages
    for the exceptions raised here."""

    class RecordingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
            if severity not in (trt.ILogger.Severity.INFO, trt.ILogger.Severity.VERBOSE):
                log.warning("TensorRT: %s", msg)

    return RecordingLogger()
