"""How long one call of an engine took on the GPU, split as trtexec reports it; the Backend interface and the
benchmark read it, so it stays apart from what imports TensorRT or torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceTimes:
    """Milliseconds of one call on the GPU, from CUDA events on its stream: host-to-device copy, the engine's
    own compute, device-to-host copy (trtexec's H2D Latency, GPU Compute Time, D2H Latency)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
