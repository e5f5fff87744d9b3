"""What an export directory can hold: one table of artifact kinds, read by export, runtime, bench and eval.

A file's name says what it is: its format (and so the backends that can open it), its precision, what it is
meant to run on, and, for an engine, the ONNX file and the TensorRT flavour it is built from and with. Each ONNX
file that TensorRT builds yields one engine per flavour. Nothing else in the package spells these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tensorrt.flavours import FLAVOURS, Flavour

INPUT_NAME = "input"  # [N, 3, H, W] float32, the one input of every artifact
OUTPUT_NAME = "logits"  # [N, classes] float32
PRECISIONS = ("fp32", "fp16", "int8", "fp8")
# The first compute capability whose GPUs run a precision, where not all do: FP8 (E4M3) tensor cores came with Ada
# (8.9: L4, L40S, RTX 40) and Hopper (9.0), and Blackwell has them (10.0, 12.0, 12.1); Ampere (8.0, 8.6) does not.
MIN_COMPUTE_CAPABILITY = {"fp8": (8, 9)}


@dataclass(frozen=True)
class FileFormat:
    name: str
    suffixes: tuple[str, ...]  # matched against the end of the file name, longest first
    description: str
    flavour: Flavour | None = None  # engines: the TensorRT flavour that builds and runs them


FORMATS = {
    f.name: f
    for f in (
        FileFormat("onnx", (".onnx",), "ONNX model"),
        FileFormat("checkpoint", (".pt", ".pth"), "PyTorch checkpoint"),
        *(FileFormat(flavour.name, (flavour.engine_suffix, flavour.engine_suffix.replace(".plan", ".engine")),
                     f"{flavour.title} engine", flavour) for flavour in FLAVOURS.values()),
    )
}
ENGINE_FORMATS = tuple(f.name for f in FORMATS.values() if f.flavour)


def format_of(path: str | Path) -> FileFormat | None:
    """The format a file's name ends in (``.rtx.plan`` before ``.plan``), or None."""
    name = Path(path).name.lower()
    matches = [(len(s), f) for f in FORMATS.values() for s in f.suffixes if name.endswith(s)]
    return max(matches, key=lambda match: match[0])[1] if matches else None


@dataclass(frozen=True)
class ArtifactKind:
    """One file an export writes.

    ``target`` is what the file is meant for: None for any backend; ``"tensorrt"`` for the INT8 form TensorRT's
    explicit quantization builds (ONNX Runtime runs it only to check it); ``"cpu"`` for the INT8 form for CPUs
    (OpenVINO runs it as fused int8 kernels, ONNX Runtime too). ``builds_engines``: TensorRT builds an engine of
    every flavour from this ONNX file. ``source``: for an engine, the ONNX file it is built from.
    """

    file_name: str
    format: str
    precision: str
    target: str | None
    description: str
    builds_engines: bool = False
    source: str | None = None

    @property
    def flavour(self) -> Flavour | None:
        return FORMATS[self.format].flavour

    @property
    def is_engine(self) -> bool:
        return self.flavour is not None


ONNX_KINDS = (
    ArtifactKind("model.onnx", "onnx", "fp32", None, "FP32 ONNX, simplified", builds_engines=True),
    ArtifactKind("model.fp16.onnx", "onnx", "fp16", None, "mixed-precision FP16 ONNX, float32 I/O",
                 builds_engines=True),
    ArtifactKind("model.int8.onnx", "onnx", "int8", "tensorrt", "INT8 Q/DQ ONNX for TensorRT's explicit quantization",
                 builds_engines=True),
    ArtifactKind("model.int8.cpu.onnx", "onnx", "int8", "cpu",
                 "INT8 Q/DQ ONNX for CPUs: OpenVINO's fused int8 kernels, ONNX Runtime"),
    ArtifactKind("model.fp8.onnx", "onnx", "fp8", "tensorrt", "FP8 (E4M3) Q/DQ ONNX for TensorRT's explicit "
                 "quantization", builds_engines=True),
)
_PRECISION_TITLES = {"fp32": "FP32", "fp16": "mixed FP16", "int8": "INT8", "fp8": "FP8 (E4M3)"}


def _engine_kind(source: ArtifactKind, flavour: Flavour) -> ArtifactKind:
    return ArtifactKind(f"engine.{source.precision}{flavour.engine_suffix}", flavour.name, source.precision,
                        source.target, f"{flavour.title} engine, {_PRECISION_TITLES[source.precision]}",
                        source=source.file_name)


ARTIFACTS = {
    kind.file_name: kind
    for kind in (
        *ONNX_KINDS,
        *(_engine_kind(source, flavour) for source in ONNX_KINDS if source.builds_engines
          for flavour in FLAVOURS.values()),
    )
}


def kind_of(path: str | Path) -> ArtifactKind | None:
    """The kind of an export's file, by its name; None for files the table does not know."""
    return ARTIFACTS.get(Path(path).name)


def onnx_artifact(precision: str, target: str | None = None) -> ArtifactKind:
    """The ONNX file an export writes for ``precision`` (and, for INT8 and FP8, the quantization ``target``)."""
    for kind in ONNX_KINDS:
        if kind.precision == precision and kind.target == target:
            return kind
    raise KeyError(f"no ONNX artifact for precision {precision!r} and target {target!r}")


def runs_precision(capability: str, precision: str) -> bool:
    """Whether a GPU of compute ``capability`` ("8.6") runs ``precision``'s kernels (FP8 needs 8.9 or later)."""
    major, minor = (int(part) for part in capability.split("."))
    return (major, minor) >= MIN_COMPUTE_CAPABILITY.get(precision, (0, 0))


def precision_capabilities(precision: str, capabilities: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``capabilities`` whose GPUs run ``precision``, in their order."""
    return tuple(c for c in capabilities if runs_precision(c, precision))


def engine_kind(source: ArtifactKind, flavour: Flavour) -> ArtifactKind:
    """The engine ``flavour`` builds from the ONNX file ``source``."""
    return ARTIFACTS[_engine_kind(source, flavour).file_name]


def engine_source(engine: str) -> ArtifactKind:
    """The ONNX kind an engine file is built from."""
    source = ARTIFACTS[engine].source
    assert source is not None, f"{engine} is not an engine"
    return ARTIFACTS[source]


RUNTIME_CACHE_SUFFIX = ".runtime.cache"


def runtime_cache_of(engine: Path, gpu: str) -> Path:
    """The file beside a TensorRT-for-RTX engine that keeps what its just-in-time step compiled on ``gpu`` (a GPU
    model's name, as a file name part): ``engine.fp16.rtx.nvidia-l4.runtime.cache``."""
    return engine.with_name(f"{engine.name.removesuffix(engine.suffix)}.{gpu}{RUNTIME_CACHE_SUFFIX}")


def is_runtime_cache(path: str | Path) -> bool:
    return Path(path).name.endswith(RUNTIME_CACHE_SUFFIX)
