"""ONNX -> TensorRT engine, in either flavour: a strongly typed network, one batch profile, a reusable timing cache.

Written against the Python API that TensorRT 10.x/11.x and TensorRT for RTX share, and type-checked against
TensorRT's stubs (tests). Neither flavour has weak typing here: the precision is already in the ONNX graph (fp16
Casts, Q/DQ), so no precision flag is set. TensorRT builds for the GPU it runs on; TensorRT for RTX builds ahead
of time, without a GPU, for the compute capabilities asked for (by default its own set). No plugin library is
loaded unless named in ``BuildOptions.plugin_libraries``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import INPUT_NAME
from ..errors import ArtifactError, BackendUnavailableError, SmlpDeployError
from ..fileio import write_bytes_atomic
from ..manifest import BatchProfile
from .capabilities import target_capabilities
from .flavours import TENSORRT_RTX, Flavour, TensorRTModule, import_tensorrt
from .messages import TensorRTMessages, distinct, join_messages, tensorrt_logger
from .plugins import load_plugin_libraries
from .rtx import set_compute_capabilities

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    profile: BatchProfile = BatchProfile()
    workspace_mib: int = 4096
    optimization_level: int = 3  # TensorRT's default; 0..5 trades build time for engine speed
    timing_cache: Path | None = None
    plugin_libraries: tuple[Path, ...] = ()  # loaded into the builder's plugin registry; none by default
    compute_capabilities: tuple[str, ...] | None = None  # TensorRT for RTX: the GPUs to build for; None: its own set


@dataclass(frozen=True)
class EngineInfo:
    flavour: Flavour
    version: str  # the flavour's library
    compute_capabilities: tuple[str, ...]  # the GPUs the engine runs on
    gpu_name: str | None  # the GPU it was built on (TensorRT); None for an ahead-of-time build
    profile: BatchProfile
    build_seconds: float


def build_engine(
    flavour: Flavour,
    onnx_path: Path,
    engine_path: Path,
    image_size: int,
    options: BuildOptions,
    on_progress: Callable[[str], None] | None = None,
) -> EngineInfo:
    """Build and write ``engine_path`` from ``onnx_path`` with ``flavour``; the parser's errors (node, op, reason)
    and the builder's messages are reported in full. Ctrl-C cancels the build (KeyboardInterrupt)."""
    interrupted = threading.Event()
    with _python_safe_for_callbacks(interrupted):
        return _build_engine(flavour, onnx_path, engine_path, image_size, options, on_progress, interrupted)


@contextlib.contextmanager
def _python_safe_for_callbacks(interrupted: threading.Event) -> Iterator[None]:
    """What the builder's calls back into Python (its logger, its progress monitor) need, both seen with TensorRT
    for RTX 1.7 (tests/test_tensorrt_rtx.py):

    * Python's cyclic garbage collector paused: the builder calls back while holding a lock that an IBuilder's
      destructor takes, so a collection there that frees an earlier builder left in a reference cycle (a failed
      build's traceback) deadlocks the process (a pytest worker hung in IBuilder's destructor under Builder()).
    * Ctrl-C only sets ``interrupted`` (in the main thread, where it would raise KeyboardInterrupt): the library
      catches and drops an exception raised in a callback ("Exception caught in log(): KeyboardInterrupt"), so a
      Ctrl-C landing there was lost and the build ran on. The progress monitor cancels the build when it is set,
      and KeyboardInterrupt is raised once the builder has returned."""
    collecting = gc.isenabled()
    gc.disable()
    takes_ctrl_c = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if takes_ctrl_c:
        signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        yield
    finally:
        if takes_ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if collecting:
            gc.enable()
    if interrupted.is_set():
        raise KeyboardInterrupt


def _build_engine(flavour: Flavour, onnx_path: Path, engine_path: Path, image_size: int, options: BuildOptions,
                  on_progress: Callable[[str], None] | None, interrupted: threading.Event) -> EngineInfo:
    reason = flavour.build_unavailable()
    if reason:
        raise BackendUnavailableError(f"cannot build a {flavour.title} engine: {reason}")
    api = import_tensorrt(flavour)
    targets = target_capabilities(flavour, options.compute_capabilities)

    messages = TensorRTMessages(echo=False)  # a build repeats a warning per layer: reported once each below
    logger = tensorrt_logger(api, messages)
    builder = api.Builder(logger)
    load_plugin_libraries(builder.get_plugin_registry(), options.plugin_libraries)  # they stay loaded
    # Strongly typed in TensorRT 10.x; in 11.x and TensorRT for RTX every network is, and the flag is kept only
    # for compatibility (its value changed, so it is read from the enum, never written as a number).
    network = builder.create_network(1 << int(api.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = api.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser_error(parser.get_error(i))}" for i in range(parser.num_errors))
        raise ArtifactError(f"{flavour.title}'s ONNX parser rejected {onnx_path.name}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(api.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.builder_optimization_level = options.optimization_level
    if flavour is TENSORRT_RTX and options.compute_capabilities is not None:
        set_compute_capabilities(config, options.compute_capabilities)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *(api.Dims(list(shape)) for shape in options.profile.shapes(image_size)))
    config.add_optimization_profile(profile)
    # TensorRT's timing cache; TensorRT for RTX deprecated its own as a no-op that needs a GPU (1.6 release notes).
    timing_cache = None if flavour.builds_without_gpu else options.timing_cache
    if timing_cache is not None:
        config.set_timing_cache(config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else
                                                           b""), False)
    config.progress_monitor = _progress_monitor(api, on_progress, interrupted)

    start = time.perf_counter()
    with messages.capture() as logged:
        plan = builder.build_serialized_network(network, config)
    if interrupted.is_set():
        raise KeyboardInterrupt
    if plan is None:
        raise SmlpDeployError(f"{flavour.title} failed to build an engine from {onnx_path.name}: "
                              f"{join_messages(logged)}")
    write_bytes_atomic(engine_path, bytes(plan))
    if logged:
        (on_progress or log.warning)(f"{flavour.title} warned: {distinct(logged)}")
    if timing_cache is not None:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - start
    gpu = None if flavour.builds_without_gpu else _gpu_name()
    return EngineInfo(flavour, flavour.version() or "?", targets, gpu, options.profile, seconds)


def parser_error(error: trt.ParserError) -> str:
    """One parser error as a person reads it: the node, its op, and the parser's reason."""
    node = error.node_name() or (f"#{error.node()}" if error.node() >= 0 else "")
    where = f"{error.node_operator()} node {node!r}: " if node else ""
    return f"{where}{error.desc()} ({str(error.code()).rpartition('.')[2]})"


def _gpu_name() -> str:
    import torch

    return str(torch.cuda.get_device_name())


def _progress_monitor(api: TensorRTModule, report: Callable[[str], None] | None,
                      interrupted: threading.Event) -> trt.IProgressMonitor:
    """An ``IProgressMonitor`` of ``api``'s (the flavour's module) that reports the builder's top-level phases, if
    asked to, and cancels the build once ``interrupted`` is set."""

    # mypy cannot take a base class from a module chosen at run time; TensorRTModule types every other use.
    class Monitor(api.IProgressMonitor):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            api.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None and report is not None:
                report(f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return not interrupted.is_set()  # False cancels the build

        def phase_finish(self, phase_name: str) -> None:
            pass

    monitor: trt.IProgressMonitor = Monitor()
    return monitor


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
