"""What a benchmark produces: one row per (target, batch size), the targets it skipped, and the machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tensorrt.times import DeviceTimes
from .timing import LatencyStats


@dataclass(frozen=True)
class Skipped:
    backend: str
    precision: str
    reason: str


@dataclass(frozen=True)
class EndToEnd:
    """JPEG bytes -> top-5 at the row's batch size, and the share of it spent decoding and preprocessing."""

    latency_ms: float
    throughput_ips: float
    preprocess_ms: float
    preprocess_share: float


@dataclass
class BenchRow:
    backend: str
    precision: str
    artifact: str | None  # file name in the export directory; None for PyTorch
    label: str
    device: str
    batch_size: int
    latency_ms: LatencyStats
    throughput_ips: float
    gflops: float
    peak_fraction: float  # gflops over the matmul peak of the same rounds
    peak_dtype: str
    matmul_peak_gflops: float
    peak_rss_mib: float | None = None
    peak_gpu_mib: float | None = None
    end_to_end: EndToEnd | None = None
    device_times: DeviceTimes | None = None  # TensorRT: median H2D copy, engine compute, D2H copy of the timed calls
    speedup: float | None = None  # the eager FP32 baseline's p50 over this row's, at the same batch size
    note: str | None = None  # set where the artifact is meant for another backend than the one timed


@dataclass(frozen=True)
class BenchModel:
    name: str
    image_size: int
    macs: int


@dataclass
class BenchReport:
    env: dict[str, Any]
    model: BenchModel
    peak_gflops: dict[str, float] = field(default_factory=dict)  # median over the batch sizes' rounds
    results: list[BenchRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    complete: bool = True  # False while a run is under way, and in what a stopped run leaves
