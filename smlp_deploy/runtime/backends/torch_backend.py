"""The reference PyTorch model, eager, on the CPU or a CUDA device."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .base import Backend


class TorchBackend(Backend):
    """Eager PyTorch; inference mode needs no per-thread state, so one instance serves all threads."""

    name = "torch"
    device: torch.device

    def __init__(self, model: torch.nn.Module, *, device: str | None = None, dtype: torch.dtype = torch.float32):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        self.model: Callable[[torch.Tensor], torch.Tensor] = model.eval().to(self.device, dtype)  # or compiled
        self.source = getattr(model, "variant", "the PyTorch model")
        self.variant = getattr(model, "variant", "model")
        size = getattr(model, "image_size", None)
        self.input_shape = (3, size, size)
        self.num_classes = getattr(model, "num_classes", None)

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype, non_blocking=True)
        return self.model(x).float().cpu().numpy()

    def describe(self) -> str:
        precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]
        return f"torch {torch.__version__} {self.device.type} {precision} ({self.variant})"

    def _release(self) -> None:
        """Drop the model, and on a GPU hand its memory back to the driver (torch's caching allocator keeps freed
        blocks for the process otherwise)."""
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
