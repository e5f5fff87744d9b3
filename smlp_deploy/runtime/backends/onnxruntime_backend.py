"""ONNX Runtime: the CUDA execution provider where onnxruntime-gpu and a GPU are present, else the CPU.

Where it runs is decided from ONNX Runtime's own providers (:func:`execution_providers`) and then read back from
the session it made, never guessed from another library: this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...cpu import cpu_cores
from ...errors import Arg, ArtifactError, BackendUnavailableError
from .base import Backend, parse_device

if TYPE_CHECKING:
    import onnxruntime as ort

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
DEVICES = ("cpu", "cuda")
Provider = str | tuple[str, dict[str, str]]


def available_providers() -> list[str]:
    import onnxruntime as ort

    providers: list[str] = ort.get_available_providers()
    return providers


def session_options(threads: int | None = None) -> ort.SessionOptions:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or cpu_cores()
    options.log_severity_level = 3  # errors only: ORT warns about every fp16 fallback on CPU
    return options


class OnnxRuntimeBackend(Backend):
    """One InferenceSession, shared by all threads (ORT's ``run`` is thread-safe)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, device: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.source = self.path.name
        chosen = execution_providers(device, available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=chosen)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise ArtifactError(f"ONNX model {str(self.path)!r} cannot be loaded by onnxruntime: "
                                f"{_ort_reason(exc, self.path)}. It is truncated or damaged, or not an ONNX model: "
                                "export it again") from exc
        self.provider = self.session.get_providers()[0]
        if device not in (None, "cpu") and self.provider != CUDA:  # ORT falls back to the CPU without a word
            raise BackendUnavailableError(
                f"device {device!r} asked for, but onnxruntime could not start its CUDA provider there (no usable "
                "NVIDIA GPU of that number, or no CUDA libraries): the session runs on the CPU; pass ",
                Arg("device", "cpu"), ", or see smlp-doctor", parameter="device")
        options = dict(self.session.get_provider_options().get(CUDA, {}))
        self.device = f"cuda:{options.get('device_id', 0)}" if self.provider == CUDA else "cpu"
        (graph_input,), graph_output = self.session.get_inputs(), self.session.get_outputs()[0]
        if graph_input.type != "tensor(float)" or len(graph_input.shape) != 4:
            raise ArtifactError(f"ONNX model {str(self.path)!r} is not an image classifier of this toolkit: its "
                                f"input {graph_input.name!r} is {graph_input.type} {graph_input.shape}, not "
                                "float [N, 3, H, W]")
        self.input_name, self.output_name = graph_input.name, graph_output.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in graph_input.shape[1:])
        self.num_classes = graph_output.shape[-1] if isinstance(graph_output.shape[-1], int) else None
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._shapes_run: set[tuple[int, ...]] = set()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # ORT plans a shape's memory from the first run at that shape (enable_mem_pattern) and gives the later runs
        # one block of their own, while its CPU arena keeps what the first run took: on sMLPNet-T at batch 32 a
        # session held 1575 MiB from its second call on, 985 MiB with the first call's memory returned
        # (docs/benchmarks/bench-memory-arena.json). So the first run of each shape on the CPU shrinks the arena at
        # its end; the calls after it, the ones a benchmark times, run as before.
        first = self.provider == CPU and batch.shape not in self._shapes_run
        outputs: list[np.ndarray] = self.session.run([self.output_name], {self.input_name: batch},
                                                     self._shrink if first else None)
        self._shapes_run.add(batch.shape)
        return outputs[0].astype(np.float32, copy=False)

    def describe(self) -> str:
        return f"onnxruntime {self.provider} ({self.path.name})"

    def _release(self) -> None:
        self.session = None  # its arenas and thread pool go with it


def _ort_reason(exc: Exception, path: Path) -> str:
    """ONNX Runtime's reason without the status code and the path it repeats."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rsplit(f"{path} failed:", 1)[-1].strip().rstrip(".")


def execution_providers(device: str | None, available: Sequence[str]) -> list[Provider]:
    """The providers a session for ``device`` asks for, given the ``available`` ones of this onnxruntime.

    ``None``: CUDA where offered (ONNX Runtime falls back to the CPU where no GPU answers), else the CPU. ``"cpu"``:
    the CPU. ``"cuda"``, ``"cuda:N"``: CUDA on device N (0 by default), with the CPU for the nodes CUDA lacks; a
    :class:`BackendUnavailableError` naming the devices there are where CUDA is not offered. Any other device is
    an :class:`~smlp_deploy.errors.InputError` naming the devices this backend takes.
    """
    if device is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    kind, index = parse_device(device, DEVICES, "onnxruntime")
    if kind == "cpu":
        return [CPU]
    if CUDA not in available:
        raise BackendUnavailableError(
            f"device {device!r} asked for, but this onnxruntime runs on the CPU only (its providers: "
            f"{', '.join(available)}; devices: cpu): install onnxruntime-gpu (pip install 'smlp-deploy[gpu]') on a "
            "machine with an NVIDIA GPU, or pass ", Arg("device", "cpu"), parameter="device")
    return [(CUDA, {"device_id": str(index or 0)}), CPU]
