"""ONNX -> TensorRT engine: a strongly typed network, one batch profile, a reusable timing cache.

Written against the Python API that TensorRT 10.x and 11.x share. TensorRT 11 dropped weak typing (no
``BuilderFlag.FP16``/``INT8``, no calibrators); the precision is already in the ONNX graph (fp16 Casts, Q/DQ),
so no precision flag is set here, in either version.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..artifacts import INPUT_NAME
from ..environment import tensorrt_unavailable_reason
from ..errors import ArtifactError, BackendUnavailableError, SmlpDeployError
from ..fileio import write_bytes_atomic
from ..manifest import BatchProfile


@dataclass(frozen=True)
class BuildOptions:
    profile: BatchProfile = BatchProfile()
    workspace_mib: int = 4096
    optimization_level: int = 3  # TensorRT's default; 0..5 trades build time for engine speed
    timing_cache: Path | None = None


def trtexec_command(onnx_path: Path, engine_path: Path, image_size: int, options: BuildOptions) -> str:
    """The equivalent trtexec line, valid for TensorRT 10.x and 11.x (``--stronglyTyped`` is a no-op in 11).

    Paths are written as given: relative ones are relative to where the line is meant to run."""
    lo, opt, hi = ("x".join(map(str, s)) for s in options.profile.shapes(image_size))
    args = [
        "trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--stronglyTyped",
        f"--minShapes={INPUT_NAME}:{lo}", f"--optShapes={INPUT_NAME}:{opt}", f"--maxShapes={INPUT_NAME}:{hi}",
        f"--memPoolSize=workspace:{options.workspace_mib}M",
        f"--builderOptimizationLevel={options.optimization_level}", "--skipInference",
    ]
    if options.timing_cache:
        args.append(f"--timingCacheFile={options.timing_cache}")
    return shlex.join(args)


@dataclass(frozen=True)
class EngineInfo:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: BatchProfile
    build_seconds: float


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    image_size: int,
    options: BuildOptions,
    on_progress: Callable[[str], None] | None = None,
) -> EngineInfo:
    """Build and write ``engine_path`` from ``onnx_path``; parser errors are reported in full."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed in 10.x; in 11.x every network is, and the flag is kept only for compatibility.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT's ONNX parser rejected {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *options.profile.shapes(image_size))
    config.add_optimization_profile(profile)
    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    if on_progress is not None:
        config.progress_monitor = _progress_monitor(trt, on_progress)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SmlpDeployError(f"TensorRT failed to build an engine from {onnx_path}; its log above says why")
    write_bytes_atomic(engine_path, bytes(plan))
    if options.timing_cache:
        write_bytes_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    return EngineInfo(
        tensorrt_version=trt.__version__,
        gpu_name=torch.cuda.get_device_name(),
        compute_capability=f"{major}.{minor}",
        profile=options.profile,
        build_seconds=time.perf_counter() - start,
    )


def _progress_monitor(trt, report: Callable[[str], None]):
    """A ``trt.IProgressMonitor`` that reports the builder's top-level phases."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                report(f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return Monitor()
