"""The two TensorRT flavours, and the one place that imports either one's module.

* **TensorRT** (module ``tensorrt``, 10.x/11.x) builds an engine on the GPU it will run on, for that GPU. It is
  the flavour for data-center GPUs: compute capability 9.0 and 10.0 (H100, H200, B200) run only its engines.
* **TensorRT for RTX** (module ``tensorrt_rtx``) builds ahead of time, with no GPU, for a list of compute
  capabilities; a just-in-time step on the GPU finishes the engine at load (its runtime cache keeps the result).
  Its engines run on 8.0, 8.6, 8.9, 12.0 and 12.1 (A100, A10, L4, L40S, RTX 30/40/50, RTX PRO Blackwell, DGX
  Spark), and 7.5 on request; not on 9.0 or 10.0.

Both parse the same strongly typed ONNX (precision is in the graph: fp16 casts, Q/DQ) through the same builder,
parser and runtime API, so one builder (``tensorrt.builder``) and one engine runner (``tensorrt.engine``) take a
:class:`Flavour` and call :func:`import_tensorrt`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from ..environment import import_problem, installed_version, torch_cuda
from ..errors import EXPORT_MODEL, ArtifactError, BackendUnavailableError, InputError
from ..filekind import file_kind

if TYPE_CHECKING:
    import tensorrt


class TensorRTModule(Protocol):
    """The part of a TensorRT module the project uses, typed by TensorRT's stubs. ``tensorrt_rtx`` has the same
    names (checked against the installed module in the tests); the stubs are TensorRT's, as none exist for it."""

    Builder: type[tensorrt.Builder]
    Logger: type[tensorrt.Logger]
    Runtime: type[tensorrt.Runtime]
    OnnxParser: type[tensorrt.OnnxParser]
    ILogger: type[tensorrt.ILogger]
    IProgressMonitor: type[tensorrt.IProgressMonitor]
    Dims: type[tensorrt.Dims]
    DataType: type[tensorrt.DataType]
    TensorIOMode: type[tensorrt.TensorIOMode]
    MemoryPoolType: type[tensorrt.MemoryPoolType]
    NetworkDefinitionCreationFlag: type[tensorrt.NetworkDefinitionCreationFlag]


if TYPE_CHECKING:
    _TENSORRT_HAS_THEM: TensorRTModule = tensorrt  # mypy holds TensorRT's module to the protocol


@dataclass(frozen=True)
class Flavour:
    name: str  # as the backend, the manifest and the command-line flags spell it
    title: str  # for people
    module: str
    distribution: str  # the PyPI package a user installs (through ``extra``)
    extra: str  # smlp-deploy's extra that installs it
    engine_suffix: str  # how its engine files end: one flavour's engine does not load in the other
    engine_magic: bytes  # how its serialized engines begin
    builds_without_gpu: bool
    runs_on: tuple[str, ...]  # the compute capabilities its engines run on; empty: any its GPU build supports
    gpus: str  # examples of the GPUs it is for
    int8: str  # what its engines compute in INT8, from NVIDIA's documentation of the library

    @property
    def install(self) -> str:
        return f"pip install 'smlp-deploy[{self.extra}]'"

    def version(self) -> str | None:
        """The installed library's version, from the module (TensorRT ships under several distributions)."""
        if import_problem(self.module):
            return None
        return str(getattr(importlib.import_module(self.module), "__version__", None) or
                   installed_version(self.distribution))

    def missing(self) -> str | None:
        """Why the library cannot be imported here (with the install), or None."""
        if importlib.util.find_spec(self.module) is None:
            where = "" if self.builds_without_gpu else " on a GPU host"
            return f"{self.title} is not installed ({self.install}{where})"
        problem = import_problem(self.module)
        return f"{self.title} cannot be imported: {problem}" if problem else None

    def build_unavailable(self) -> str | None:
        """Why engines of this flavour cannot be built here, or None."""
        missing = self.missing()
        if missing or self.builds_without_gpu:
            return missing
        unavailable = torch_cuda().unavailable
        return f"{self.title} builds on the GPU the engine is for, and {unavailable}" if unavailable else None

    def builder_problem(self) -> str | None:
        """Why this flavour's builder cannot be created here (the first thing a build does), or None."""
        reason = self.build_unavailable()
        if reason:
            return reason
        api = import_tensorrt(self)
        try:
            builder = api.Builder(api.Logger(api.Logger.ERROR))
        except (RuntimeError, TypeError) as exc:
            return f"{self.title} {self.version()} cannot create a builder: {exc}"
        return None if builder is not None else f"{self.title} {self.version()} cannot create a builder"

    def run_unavailable(self) -> str | None:
        """Why engines of this flavour cannot run here (no library, no GPU, a GPU it does not support), or None."""
        missing = self.missing()
        if missing:
            return missing
        unavailable = torch_cuda().unavailable
        if unavailable:
            gpus = f" of compute capability {', '.join(self.runs_on)} ({self.gpus})" if self.runs_on else \
                " like the one they were built on"
            return f"{self.title} engines run on an NVIDIA GPU{gpus}, and {unavailable}"
        capability = current_compute_capability()
        if self.runs_on and capability not in self.runs_on:
            return (f"{self.title} engines run on compute capability {', '.join(self.runs_on)}; this GPU is "
                    f"{capability}: {other_flavour_hint(capability)}")
        return None


# The magic tags: b"ftrt" begins every TensorRT plan (TensorRT's "Magic tag does not match" error, NVIDIA/TensorRT
# #1384), b"vtrt" every TensorRT-for-RTX plan (read off engines built here; its header layout is undocumented).
TENSORRT = Flavour(
    "tensorrt", "TensorRT", "tensorrt", "tensorrt", "trt", ".plan", b"ftrt", builds_without_gpu=False, runs_on=(),
    gpus="H100, H200, B200 (compute capability 9.0, 10.0) and every GPU TensorRT supports, built on that GPU",
    int8="the layers between Q/DQ pairs run in INT8 kernels (explicit quantization)",
)
TENSORRT_RTX = Flavour(
    "tensorrt-rtx", "TensorRT for RTX", "tensorrt_rtx", "tensorrt-rtx", "rtx", ".rtx.plan", b"vtrt",
    builds_without_gpu=True,
    runs_on=("8.0", "8.6", "8.9", "12.0", "12.1"),
    gpus="A100, A10, L4, L40S, RTX 30/40/50 series, RTX PRO Blackwell, DGX Spark",
    # Its support matrix (1.0, 1.1) lists INT8 as weight-only GEMM ("INT8 WoQ GEMM") on 8.6, 8.9 and 12.0, and
    # 8-bit activation math only as FP8 GEMM (8.9 and later); the ahead-of-time build logs no layer precision.
    int8="weights only (INT8 weight-only GEMM, NVIDIA's TensorRT for RTX support matrix); activations and "
         "arithmetic stay fp16, so INT8's accuracy, not INT8 activation speed; FP8 (8.9 and later) is these GPUs' "
         "8-bit arithmetic",
)
FLAVOURS = {f.name: f for f in (TENSORRT, TENSORRT_RTX)}
HEADER_BYTES = 64  # an engine's header (Runtime.engine_header_size of TensorRT for RTX)


def flavour(name: str) -> Flavour:
    """The flavour called ``name``; an :class:`InputError` listing them otherwise."""
    try:
        return FLAVOURS[name]
    except KeyError:
        raise InputError(f"unknown TensorRT flavour {name!r}: choose among {', '.join(FLAVOURS)}",
                         parameter="flavours") from None


def import_tensorrt(flavour: Flavour) -> TensorRTModule:
    """``flavour``'s module: the only import of ``tensorrt`` or ``tensorrt_rtx`` in the package."""
    missing = flavour.missing()
    if missing:
        raise BackendUnavailableError(missing)
    return cast(TensorRTModule, importlib.import_module(flavour.module))


def check_engine_header(path: Path, flavour: Flavour) -> None:
    """Refuse a file that is not an engine of ``flavour`` by its first bytes, before any library or GPU is asked:
    an engine of the other flavour is named, with the install that runs it."""
    with open(path, "rb") as file:
        head = file.read(HEADER_BYTES)
    if head.startswith(flavour.engine_magic) and len(head) == HEADER_BYTES:
        return
    other = next((f for f in FLAVOURS.values() if f is not flavour and head.startswith(f.engine_magic)), None)
    if other is not None:
        raise ArtifactError(f"{str(path)!r} is a {other.title} engine, not a {flavour.title} one: name it "
                            f"*{other.engine_suffix} and run it with {other.title} ({other.install})")
    kind = file_kind(path)
    what = kind.words if kind.name != "unknown" else f"{len(head)} bytes, too few for an engine's header" if \
        len(head) < HEADER_BYTES else f"binary data beginning with {head[:4]!r}"
    raise ArtifactError(f"{str(path)!r} is not a {flavour.title} engine: it is {what}, and its engines begin with "
                        f"{flavour.engine_magic!r}. Expected an engine built by ", EXPORT_MODEL,
                        f" (engine.<precision>{flavour.engine_suffix})")


def current_compute_capability() -> str:
    """The compute capability of torch's current CUDA device ("8.9")."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def flavour_for_compute_capability(capability: str) -> Flavour:
    """The flavour whose engines run on a GPU of ``capability``: TensorRT for RTX where it can, else TensorRT."""
    return TENSORRT_RTX if capability in TENSORRT_RTX.runs_on else TENSORRT


def other_flavour_hint(capability: str) -> str:
    chosen = flavour_for_compute_capability(capability)
    return f"use {chosen.title} engines there ({chosen.install}, engines ending in {chosen.engine_suffix})"
