"""The small interface every backend implements: load once, run a float32 batch, describe yourself.

As in Polygraphy's runners, the base class checks every batch against what the artifact declares before the
backend sees it, so a wrong shape is an :class:`InputError` naming both shapes, never a backend's traceback. It
also keeps ``close()`` from pulling a session, an engine or device memory from under a call running on another
thread: the close is refused with a clear error instead, and a call after a close is refused too.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Self

import numpy as np

from ...errors import InputError
from ...tensorrt.times import DeviceTimes

_CALLS = threading.Lock()  # guards every backend's ``closed`` and count of calls in flight (held for a few steps)


class Backend(ABC):
    """Runs preprocessed float32 batches [N, 3, H, W] and returns float32 logits [N, classes].

    ``input_shape`` is one sample's shape as the artifact declares it (None where a dimension is free);
    ``max_batch_size`` the largest batch one ``run`` call takes (None: no limit), so callers split larger
    lists; ``num_classes`` the width of the logits; ``compute_precision`` the precision it computes in where the
    backend chooses one of its own (OpenVINO: "fp32", "bf16"), None where the artifact's precision says it.
    Backends are safe to share between threads: each documents how. A backend is a context manager that closes
    itself.
    """

    name: str = "backend"
    device: object = "cpu"  # where it runs: "cpu", "cuda", a torch.device
    source: str = "artifact"  # what was loaded, for messages: a file name or a model name
    input_shape: tuple[int | None, ...] = (3, None, None)
    max_batch_size: int | None = None
    num_classes: int | None = None
    compute_precision: str | None = None
    closed: bool = False
    _calls: int = 0  # run() calls in flight, on any thread

    def run(self, batch: np.ndarray) -> np.ndarray:
        with _CALLS:
            if self.closed:
                raise InputError(f"{self.source} was closed: open it again to run it")
            self._calls += 1
        try:
            self.check_batch(batch)
            return self._run(batch)
        finally:
            with _CALLS:
                self._calls -= 1

    def check_batch(self, batch: np.ndarray) -> None:
        """Raise :class:`InputError` unless ``batch`` is a float32 array this artifact accepts."""
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
            what = f"{batch.dtype} array" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise InputError(f"{self.source} takes float32 batches [N, 3, H, W], got a {what}")
        expected = ("N", *(d if d is not None else "?" for d in self.input_shape))
        fits = batch.ndim == 1 + len(self.input_shape) and batch.shape[0] >= 1 and all(
            d is None or d == n for d, n in zip(self.input_shape, batch.shape[1:], strict=True)
        )
        if not fits:
            raise InputError(f"batch of shape {list(batch.shape)} does not fit {self.source}, which takes "
                             f"{list(expected)}")
        if self.max_batch_size and batch.shape[0] > self.max_batch_size:
            raise InputError(f"batch of {batch.shape[0]} is larger than {self.source} takes "
                             f"(at most {self.max_batch_size}): split it")

    def run_all(self, inputs: np.ndarray) -> np.ndarray:
        """``inputs`` of any count, run in chunks of at most ``max_batch_size`` (engines have a profile maximum)."""
        step = self.max_batch_size or len(inputs)
        return np.concatenate([self.run(inputs[i : i + step]) for i in range(0, len(inputs), step)])

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and reports: backend, device, precision or provider."""

    def last_times(self) -> DeviceTimes | None:
        """The GPU time split of this thread's last call, for backends that measure one; None otherwise."""
        return None

    def close(self) -> None:
        """Release the backend's resources (device memory, sessions, thread pools); it is unusable afterwards, and a
        second close does nothing. Refused, with an :class:`InputError`, while a call runs on another thread."""
        with _CALLS:
            if self.closed:
                return
            if self._calls:
                raise InputError(f"{self.source} cannot be closed while {self._calls} call(s) run on other threads: "
                                 "close it once they have returned")
            self.closed = True
        self._release()

    @abstractmethod
    def _release(self) -> None:
        """What ``close`` frees: the backend's own resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


_DEVICE = re.compile(r"(?P<kind>[a-z]+)(?::(?P<index>\d+))?")


def parse_device(device: str, kinds: Sequence[str], backend: str) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``, for a backend that runs on the device ``kinds`` (``"cpu"``, ``"cuda"``).
    Anything else (``"gpu"``, ``"banana"``, ``"cpu:1"``) is an :class:`InputError` naming the devices it takes."""
    match = _DEVICE.fullmatch(device) if isinstance(device, str) else None
    if match is None or match["kind"] not in kinds or (match["index"] is not None and match["kind"] == "cpu"):
        takes = ", ".join("cuda, cuda:N" if kind == "cuda" else kind for kind in kinds)
        raise InputError(f"device {device!r} is not one backend {backend!r} runs on: it takes {takes}",
                         parameter="device")
    return match["kind"], None if match["index"] is None else int(match["index"])
