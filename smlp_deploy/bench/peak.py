"""The matmul rate this machine reaches right now: the ceiling each model figure is compared with."""

from __future__ import annotations

from .timing import measure


def matmul_peak_gflops(device: str = "cpu", dtype: str = "fp32", duration_s: float = 1.0) -> float:
    """GFLOP/s of one large square matmul (torch: oneDNN/MKL on CPUs, cuBLAS on GPUs), median over the run."""
    import torch

    size = 8192 if device == "cuda" else 2048
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    a, b = (torch.randn(size, size, device=device, dtype=torch_dtype) for _ in range(2))
    out = torch.empty_like(a)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        latency = measure(lambda: torch.mm(a, b, out=out), warmup=2, duration_s=duration_s, sync=sync)
    return 2 * size**3 / (latency.summary()["p50"] * 1e-3) / 1e9
