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

from ..errors import ArtifactError, BackendUnavailableError, SmlpDeployError
from ..fileio import write_bytes_atomic
from .onnx_graph import INPUT_NAME


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts (min..max) and the one it is tuned for (opt)."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise SmlpDeployError(f"batch profile needs 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """``"1:8:32"`` -> BatchProfile(1, 8, 32)."""
        try:
            lo, opt, hi = (int(v) for v in text.split(":"))
        except ValueError:
            raise SmlpDeployError(f"batch profile {text!r} is not of the form min:opt:max (e.g. 1:8:32)") from None
        return cls(lo, opt, hi)

    def shapes(self, image_size: int) -> tuple[tuple[int, ...], ...]:
        return tuple((b, 3, image_size, image_size) for b in (self.min, self.opt, self.max))

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class BuildOptions:
    profile: BatchProfile = BatchProfile()
    workspace_mib: int = 4096
    optimization_level: int = 3  # TensorRT's default; 0..5 trades build time for engine speed
    timing_cache: Path | None = None


def tensorrt_unavailable_reason() -> str | None:
    """Why an engine cannot be built or run here, or None if TensorRT and a CUDA GPU are both present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install 'smlp-deploy[trt]' on a GPU host)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def trtexec_command(onnx_path: Path, engine_path: Path, image_size: int, options: BuildOptions) -> str:
    """The equivalent trtexec line, valid for TensorRT 10.x and 11.x (``--stronglyTyped`` is a no-op in 11)."""
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
