"""TensorRT engines, of either flavour, as a backend: the runner over ``tensorrt.engine``, which holds everything
that touches TensorRT (deserializing, per-thread contexts and buffers, CUDA graphs, timing, the RTX runtime
cache). Here: the CUDA device chosen and checked, and the Backend interface (inputs checked before the engine
sees them, ``describe``, ``close``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InputError
from ...tensorrt.engine import Engine
from ...tensorrt.flavours import Flavour
from ...tensorrt.times import DeviceTimes
from .base import Backend

if TYPE_CHECKING:
    import torch


class TensorRTBackend(Backend):
    """An engine of ``flavour`` (TensorRT or TensorRT for RTX) on a CUDA device (``device="cuda:1"``; by default
    the current one)."""

    def __init__(self, path: str | Path, flavour: Flavour, *, device: str | None = None, cuda_graphs: bool = False,
                 plugin_libraries: Sequence[str | Path] = ()):
        self.path = Path(path)
        self.flavour = flavour
        self.name = flavour.name
        self.source = self.path.name
        self.device: torch.device = cuda_device(device)
        self.cuda_graphs = cuda_graphs
        self.engine = Engine(self.path, flavour, self.device, cuda_graphs=cuda_graphs,
                             plugin_libraries=plugin_libraries)
        self.max_batch_size = self.engine.max_batch_size
        self.input_shape = self.engine.sample_shape
        self.num_classes = self.engine.num_classes

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.engine.run(batch)

    def last_times(self) -> DeviceTimes | None:
        """The GPU time split of this thread's last call; None before its first."""
        return self.engine.last_times()

    def describe(self) -> str:
        import torch

        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return (f"{self.name} {self.flavour.version()} on {torch.cuda.get_device_name(self.device)} ({self.device}; "
                f"{self.path.name}, max batch {self.max_batch_size}{graphs})")

    def _release(self) -> None:
        self.engine.close()


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
