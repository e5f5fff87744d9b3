"""ONNX -> TensorRT engine: a strongly typed network, one batch profile, a reusable timing cache.

Written against the Python API that TensorRT 10.x and 11.x share, and type-checked against its stubs (tests).
TensorRT 11 dropped weak typing (no ``BuilderFlag.FP16``/``INT8``, no calibrators); the precision is already in
the ONNX graph (fp16 Casts, Q/DQ), so no precision flag is set here, in either version. No plugin library is
loaded unless named in ``BuildOptions.plugin_libraries``.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..artifacts import INPUT_NAME
from ..environment import tensorrt_unavailable_reason
from ..errors import ArtifactError, BackendUnavailableError, SmlpDeployError
from ..fileio import write_bytes_atomic
from ..manifest import BatchProfile
from ..runtime.backends.tensorrt_backend import (
    TensorRTMessages, join_messages, load_plugin_libraries, tensorrt_logger,
)

if TYPE_CHECKING:
    import tensorrt as trt


@dataclass(frozen=True)
class BuildOptions:
    profile: BatchProfile = BatchProfile()
    workspace_mib: int = 4096
    optimization_level: int = 3  # TensorRT's default; 0..5 trades build time for engine speed
    timing_cache: Path | None = None
    plugin_libraries: tuple[Path, ...] = ()  # loaded into the builder's plugin registry; none by default


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
    args += [f"--staticPlugins={library}" for library in options.plugin_libraries]
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
    """Build and write ``engine_path`` from ``onnx_path``; parser errors and the builder's messages are reported
    in full."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt
    import torch

    messages = TensorRTMessages()
    logger = tensorrt_logger(messages)
    builder = trt.Builder(logger)
    load_plugin_libraries(builder.get_plugin_registry(), options.plugin_libraries)  # they stay loaded
    # Strongly typed in 10.x; in 11.x every network is, and the flag is kept only for compatibility (its value
    # changed, so it is read from the enum, never written as a number).
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT's ONNX parser rejected {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *(trt.Dims(list(shape)) for shape in options.profile.shapes(image_size)))
    config.add_optimization_profile(profile)
    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.exists() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    if on_progress is not None:
        config.progress_monitor = _progress_monitor(on_progress)

    start = time.perf_counter()
    with messages.capture() as logged:
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SmlpDeployError(f"TensorRT failed to build an engine from {onnx_path}: {join_messages(logged)}")
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


def _progress_monitor(report: Callable[[str], None]) -> trt.IProgressMonitor:
    """A ``trt.IProgressMonitor`` that reports the builder's top-level phases."""
    import tensorrt as trt

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                report(f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()
