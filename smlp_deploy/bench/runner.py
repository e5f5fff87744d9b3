"""run_benchmark: every target at every batch size, with the eager PyTorch baseline measured in the same run."""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from ..cpu import cpu_cores
from ..environment import capture
from ..errors import InputError, SmlpDeployError
from ..manifest import MANIFEST_NAME, Manifest
from ..models.complexity import count_macs
from ..models.registry import create_model
from ..runtime.backends.base import Backend
from ..runtime.preprocess import Preprocessor
from ..samples import sample_images
from ..tensorrt.times import DeviceTimes
from .heartbeat import Heartbeat
from .peak import matmul_probe
from .results import BenchModel, BenchReport, BenchRow, EndToEnd, Skipped
from .targets import BACKENDS, DEFAULT_BACKENDS, PRECISIONS, Target, resolve
from .timing import Latency, LatencyStats, measure_interleaved

BASELINE = ("torch", "fp32")
R = TypeVar("R")
E2E_PHOTO_SIZE = (500, 375)  # a typical web photo, as JPEG


@dataclass
class BenchConfig:
    variant: str = "tiny"
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    precisions: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    artifacts: Path | None = None  # an export directory; None: export fp32/fp16 to a temporary one
    warmup: int = 3
    iters: int | None = None
    duration_s: float = 3.0
    end_to_end: bool = False
    device: str | None = None  # default: cuda when a GPU is visible
    threads: int | None = None  # default: every core this process may use

    def check(self) -> None:
        for name, given, allowed in (("backends", self.backends, BACKENDS),
                                     ("precisions", self.precisions, PRECISIONS)):
            unknown = [g for g in given if g not in allowed]
            if unknown or not given:
                raise InputError(f"{name} must be among {', '.join(allowed)}, got {', '.join(given) or 'none'}",
                                 parameter=name)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InputError(f"batch sizes must be positive integers, got {self.batch_sizes}", parameter="batch_sizes")
        if self.artifacts is not None and not (Path(self.artifacts) / MANIFEST_NAME).is_file():
            raise InputError(f"{str(self.artifacts)!r} is not an export directory (no {MANIFEST_NAME})",
                             parameter="artifacts")

    def measure(self, calls: Mapping[str, Callable[[], R]], on_result: Callable[[str, R], None],
                progress: Callable[[str], None]) -> dict[str, Latency]:
        """``calls`` timed interleaved, with this run's warm-up and count or duration."""
        return measure_interleaved(calls, warmup=self.warmup, iters=self.iters, duration_s=self.duration_s,
                                   on_result=on_result, progress=progress)


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = print,
                  on_update: Callable[[BenchReport], None] | None = None) -> BenchReport:
    """Time every target of ``config`` at each of its batch sizes, with the baselines in the same rounds.

    ``log`` receives progress: a line as each phase starts and each result comes in, and between them, at least
    every 20 s, what runs. ``on_update`` receives the report each time it grows (the targets skipped, then each
    batch size's rows), ``complete`` False until the last, so a caller can keep it on disk as it goes: a run
    stopped by an error or Ctrl-C keeps what it measured.
    """
    config.check()
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = config.threads or cpu_cores()
    progress = Heartbeat(log)
    update = on_update or (lambda report: None)
    with _torch_threads(threads), tempfile.TemporaryDirectory(prefix="smlp-bench-") as tmp:
        artifacts = Path(config.artifacts) if config.artifacts else _export(config, Path(tmp), progress)
        manifest = Manifest.load(artifacts / MANIFEST_NAME)
        info = manifest.model
        torch.manual_seed(0)
        model = create_model(info.name, num_classes=info.num_classes, image_size=info.image_size)
        macs = count_macs(model)
        report = BenchReport(capture() | {"threads": threads, "device": device},
                             BenchModel(info.name, info.image_size, macs), complete=False)
        targets: list[Target] = []
        for backend, precision in _pairs(config, device):
            for found in resolve(backend, precision, model=model, artifacts=artifacts, device=device, threads=threads):
                if isinstance(found, Skipped):
                    report.skipped.append(found)
                    progress.say(f"skipped {backend} {precision}: {found.reason}")
                else:
                    targets.append(found)
        update(report)
        preprocessor = Preprocessor(manifest.preprocess)
        peak_dtypes = ("fp32", "fp16") if device == "cuda" else ("fp32",)
        probes = {dtype: matmul_probe(device, dtype) for dtype in peak_dtypes}
        peaks: list[dict[str, float]] = []
        for rows, batch_peaks in _bench_targets(targets, probes, config, preprocessor, macs, report.skipped,
                                                progress):
            _add_speedups(rows)
            report.results += rows
            peaks.append(batch_peaks)
            report.peak_gflops = {dtype: float(np.median([p[dtype] for p in peaks])) for dtype in peak_dtypes}
            update(report)
    report.complete = True
    return report


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count is process-wide: set it for the run, give the caller's back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pairs(config: BenchConfig, device: str) -> list[tuple[str, str]]:
    """The requested matrix, with the baselines first: eager FP32 always, and on GPUs eager FP16 and
    torch.compile, so every figure has a ratio measured in the same run."""
    baselines = [BASELINE] + ([("torch", "fp16"), ("torch.compile", "fp16")] if device == "cuda" else [])
    pairs = [(b, p) for b in config.backends for p in config.precisions]
    return baselines + [pair for pair in pairs if pair not in baselines]


def _bench_targets(targets: list[Target], probes: dict[str, tuple[Callable[[], object], float]], config: BenchConfig,
                   preprocessor: Preprocessor, macs: int, skipped: list[Skipped],
                   progress: Heartbeat) -> Iterator[tuple[list[BenchRow], dict[str, float]]]:
    """At each batch size, every target is loaded afresh and timed interleaved (see ``measure_interleaved``) with
    the matmul ``probes`` (dtype -> (call, FLOPs)), so each row's peak comes from its rounds; then all are closed.
    A session keeps the memory of every batch size it ran (ONNX Runtime's arena, OpenVINO's buffers), so targets
    kept from batch 1 to 32 would carry batch 1's and 8's into batch 32. Yields each batch size's rows and peaks;
    a target that fails to load joins ``skipped``."""
    by_label = {target.label: target for target in targets}
    unloadable: set[str] = set()
    for batch_size in config.batch_sizes:
        at = f"batch {batch_size}"
        with contextlib.ExitStack() as stack:
            live = _load(targets, batch_size, stack, unloadable, skipped, progress)
            batch = np.random.default_rng(0).standard_normal((batch_size, 3, *[preprocessor.config.input_size] * 2),
                                                             dtype=np.float32)
            calls = {label: functools.partial(backend.run, batch) for label, backend in live.items()}
            progress.say(f"{at}: {len(calls)} target(s) loaded; peak memory of a first call each")
            memory = {}
            for label, call in calls.items():
                progress.beat(f"{at}: first call: {label}")
                memory[label] = _peak_memory_of(call, by_label[label])
            device_times: dict[str, list[DeviceTimes]] = {label: [] for label in calls}
            timed: dict[str, Callable[[], object]] = {**calls}
            timed |= {f"matmul {d}": call for d, (call, _) in probes.items()}
            progress.say(f"{at}: timing {len(timed)} calls in rounds ({config.warmup} warm-up calls each)")
            latencies = config.measure(timed, functools.partial(_record_device_times, live, device_times),
                                       functools.partial(_beat, progress, at))
            peaks = {d: flops / (latencies.pop(f"matmul {d}").summary().p50 * 1e-3) / 1e9
                     for d, (_, flops) in probes.items()}
            e2e = _end_to_end(live, preprocessor, batch_size, config, progress) if config.end_to_end else {}
            rows = []
            for label, latency in latencies.items():
                row = _row(by_label[label], batch_size, latency.summary(), macs, peaks, memory[label], e2e.get(label),
                           _median_times(device_times[label]))
                progress.say(f"{label:<32} batch {batch_size:>3}: p50 {row.latency_ms.p50:8.2f} ms "
                             f"({row.throughput_ips:8.1f} img/s, {row.peak_fraction:.0%} of matmul peak)")
                rows.append(row)
        yield rows, peaks


def _beat(progress: Heartbeat, at: str, what: str) -> None:
    progress.beat(f"{at}: {what}")


def _load(targets: list[Target], batch_size: int, stack: contextlib.ExitStack, unloadable: set[str],
          skipped: list[Skipped], progress: Heartbeat) -> dict[str, Backend]:
    """The targets that load and take ``batch_size``, by label, each closed when ``stack`` closes."""
    live: dict[str, Backend] = {}
    for target in targets:
        if target.label in unloadable:
            continue
        progress.beat(f"batch {batch_size}: loading {target.label}")
        try:
            backend = target.load()
        except SmlpDeployError as exc:
            unloadable.add(target.label)
            skipped.append(Skipped(target.backend, target.precision, str(exc)))
            progress.say(f"skipped {target.label}: {exc}")
            continue
        stack.callback(backend.close)
        if backend.max_batch_size and batch_size > backend.max_batch_size:
            progress.say(f"{target.label}: batch {batch_size} is beyond the engine's profile "
                         f"({backend.max_batch_size})")
        else:
            live[target.label] = backend
    return live


def _record_device_times(live: dict[str, Backend], device_times: dict[str, list[DeviceTimes]], label: str,
                         _: object) -> None:
    """``on_result`` of a batch size's timed calls: the GPU time split of the call just timed, if it has one."""
    backend = live.get(label)
    if backend is not None and (times := backend.last_times()) is not None:
        device_times[label].append(times)


def _median_times(samples: list[DeviceTimes]) -> DeviceTimes | None:
    """The median of each part of the timed calls' GPU time split (TensorRT targets); None for others."""
    if not samples:
        return None
    h2d, compute, d2h = np.median([[t.h2d_ms, t.compute_ms, t.d2h_ms] for t in samples], axis=0)
    return DeviceTimes(float(h2d), float(compute), float(d2h))


def _row(target: Target, batch_size: int, latency: LatencyStats, macs: int, peaks: dict[str, float],
         memory: tuple[float | None, float | None], e2e: EndToEnd | None, times: DeviceTimes | None) -> BenchRow:
    seconds = latency.p50 * 1e-3
    gflops = 2 * macs * batch_size / seconds / 1e9
    peak_dtype = "fp16" if target.precision == "fp16" and "fp16" in peaks else "fp32"
    return BenchRow(
        backend=target.backend, precision=target.precision,
        artifact=target.artifact.file_name if target.artifact else None, label=target.label, device=target.device,
        batch_size=batch_size, latency_ms=latency, throughput_ips=batch_size / seconds, gflops=gflops,
        peak_fraction=gflops / peaks[peak_dtype], peak_dtype=peak_dtype, matmul_peak_gflops=peaks[peak_dtype],
        peak_rss_mib=memory[0], peak_gpu_mib=memory[1], end_to_end=e2e, device_times=times, note=target.note,
    )


def _end_to_end(backends: dict[str, Backend], preprocessor: Preprocessor, batch_size: int, config: BenchConfig,
                progress: Heartbeat) -> dict[str, EndToEnd]:
    """JPEG bytes -> top-5 (decode + preprocess + inference) per target, and the share of it spent decoding and
    preprocessing, from the timed calls' own split of their time (so the share is below 1 by construction)."""
    photos = _jpeg_photos()
    jpegs = [photos[i % len(photos)] for i in range(batch_size)]

    def classify(backend: Backend) -> tuple[float, float]:
        start = time.perf_counter()
        batch = preprocessor.batch(jpegs)
        preprocessed = time.perf_counter()
        np.argpartition(-backend.run(batch), 5, axis=1)[:, :5]
        return (preprocessed - start) * 1e3, (time.perf_counter() - start) * 1e3

    splits: dict[str, list[tuple[float, float]]] = {label: [] for label in backends}
    calls = {label: functools.partial(classify, backend) for label, backend in backends.items()}
    progress.say(f"batch {batch_size}: end to end, JPEG bytes to top-5")
    latencies = config.measure(calls, lambda label, split: splits[label].append(split),
                               functools.partial(_beat, progress, f"batch {batch_size}: end to end"))
    results = {}
    for label, latency in latencies.items():
        total = latency.summary().p50
        preprocess, whole = np.array(splits[label]).T
        results[label] = EndToEnd(total, batch_size / (total * 1e-3), float(np.median(preprocess)),
                                  float(np.median(preprocess / whole)))
    return results


@functools.cache
def _jpeg_photos() -> tuple[bytes, ...]:
    """The bundled photographs as typical web JPEGs, encoded once per run."""
    encoded = []
    for path in sample_images():
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize(E2E_PHOTO_SIZE, Image.Resampling.BICUBIC).save(buffer, "JPEG",
                                                                                               quality=90)
        encoded.append(buffer.getvalue())
    return tuple(encoded)


def _add_speedups(results: list[BenchRow]) -> None:
    """``speedup``: the eager FP32 baseline's p50 over this row's, at the same batch size."""
    base = {r.batch_size: r.latency_ms.p50 for r in results if (r.backend, r.precision) == BASELINE}
    for r in results:
        r.speedup = base[r.batch_size] / r.latency_ms.p50 if r.batch_size in base else None


def _peak_memory_of(call: Callable[[], object], target: Target) -> tuple[float | None, float | None]:
    """Peak memory over one call (the first at a batch size, the one that grows the arenas), in MiB: host, GPU.

    Host: the process's peak RSS; every target of the batch size is loaded, so a row also counts the arenas of
    the targets measured before it. GPU: what torch's allocator added during the call, for PyTorch targets only (the
    allocator does not see TensorRT's or ONNX Runtime's memory, nor would the figure be theirs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the peak RSS (VmHWM)
    except OSError:
        pass
    on_torch_gpu = target.device == "cuda" and target.backend in ("torch", "torch.compile")
    if on_torch_gpu:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    call()
    gpu = (torch.cuda.max_memory_allocated() - before) / 2**20 if on_torch_gpu else None
    return _rss_mib("VmHWM"), gpu


def _rss_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _export(config: BenchConfig, out: Path, progress: Heartbeat) -> Path:
    from ..export.pipeline import export_model

    precisions = tuple(p for p in ("fp32", "fp16") if p == "fp32" or p in config.precisions)
    with progress.ticking(f"exporting {config.variant} ({', '.join(precisions)}) to a temporary directory ..."):
        export_model(config.variant, precisions=precisions, out_dir=out, quiet=True)
    return out
