"""The matmul rate this machine reaches right now: the ceiling each model figure is compared with."""

from __future__ import annotations

from collections.abc import Callable


def matmul_probe(device: str = "cpu", dtype: str = "fp32") -> tuple[Callable[[], object], float]:
    """One large square matmul (torch: oneDNN/MKL on CPUs, cuBLAS on GPUs) as a call, and its FLOP count.

    Timed in the same rounds as the targets, it gives the rate the machine reached in those rounds; a peak
    measured once, before them, is off by whatever the machine did at that moment.
    """
    import torch

    size = 8192 if device == "cuda" else 2048
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    a, b = (torch.randn(size, size, device=device, dtype=torch_dtype) for _ in range(2))
    out = torch.empty_like(a)
    sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call() -> None:
        with torch.inference_mode():
            torch.mm(a, b, out=out)
        sync()

    return call, 2.0 * size**3
