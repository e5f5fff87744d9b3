"""The small interface every backend implements: load once, run a float32 batch, describe yourself."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """Runs preprocessed float32 batches [N, 3, H, W] and returns float32 logits [N, classes].

    ``max_batch_size`` is the largest batch one ``run`` call takes (None: no limit); callers split larger
    lists. Backends are safe to share between threads: each documents how.
    """

    name: str = "backend"
    max_batch_size: int | None = None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and reports: backend, device, precision or provider."""

    def close(self) -> None:
        """Release device resources; the backend is unusable afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
