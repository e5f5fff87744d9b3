"""What an export directory can hold: one table of artifact kinds, read by export, runtime, bench and eval.

A file's name says what it is: its format (and so the backend that opens it), its precision, what it is meant
to run on, and which TensorRT engine is built from it. Nothing else in the package spells these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INPUT_NAME = "input"  # [N, 3, H, W] float32, the one input of every artifact
OUTPUT_NAME = "logits"  # [N, classes] float32
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class FileFormat:
    name: str
    suffixes: tuple[str, ...]
    backend: str  # the runtime backend that opens files of this format
    description: str


FORMATS = {
    f.name: f
    for f in (
        FileFormat("onnx", (".onnx",), "onnxruntime", "ONNX model"),
        FileFormat("tensorrt", (".plan", ".engine"), "tensorrt", "TensorRT engine"),
        FileFormat("checkpoint", (".pt", ".pth"), "torch", "PyTorch checkpoint"),
    )
}


def format_of(path: str | Path) -> FileFormat | None:
    """The format a file's suffix names, or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


@dataclass(frozen=True)
class ArtifactKind:
    """One file an export writes.

    ``target`` is what the file is meant for: None for any backend; ``"tensorrt"`` for the INT8 form TensorRT's
    explicit quantization builds (ONNX Runtime runs it only to check it); ``"cpu"`` for the INT8 form ONNX
    Runtime's x86 kernels run fastest. ``engine`` is the engine built from an ONNX file, if any.
    """

    file_name: str
    format: str
    precision: str
    target: str | None
    engine: str | None
    description: str

    @property
    def backend(self) -> str:
        return FORMATS[self.format].backend


ARTIFACTS = {
    kind.file_name: kind
    for kind in (
        ArtifactKind("model.onnx", "onnx", "fp32", None, "engine.fp32.plan", "FP32 ONNX, simplified"),
        ArtifactKind("model.fp16.onnx", "onnx", "fp16", None, "engine.fp16.plan",
                     "mixed-precision FP16 ONNX, float32 I/O"),
        ArtifactKind("model.int8.onnx", "onnx", "int8", "tensorrt", "engine.int8.plan",
                     "INT8 Q/DQ ONNX for TensorRT's explicit quantization"),
        ArtifactKind("model.int8.cpu.onnx", "onnx", "int8", "cpu", None,
                     "INT8 Q/DQ ONNX for ONNX Runtime's x86 kernels"),
        ArtifactKind("engine.fp32.plan", "tensorrt", "fp32", None, None, "TensorRT engine, FP32"),
        ArtifactKind("engine.fp16.plan", "tensorrt", "fp16", None, None, "TensorRT engine, mixed FP16"),
        ArtifactKind("engine.int8.plan", "tensorrt", "int8", "tensorrt", None, "TensorRT engine, INT8"),
    )
}


def kind_of(path: str | Path) -> ArtifactKind | None:
    """The kind of an export's file, by its name; None for files the table does not know."""
    return ARTIFACTS.get(Path(path).name)


def onnx_artifact(precision: str, target: str | None = None) -> ArtifactKind:
    """The ONNX file an export writes for ``precision`` (and, for INT8, the quantization ``target``)."""
    for kind in ARTIFACTS.values():
        if kind.format == "onnx" and kind.precision == precision and kind.target == target:
            return kind
    raise KeyError(f"no ONNX artifact for precision {precision!r} and target {target!r}")


def engine_source(engine: str) -> ArtifactKind:
    """The ONNX kind an engine file is built from."""
    return next(kind for kind in ARTIFACTS.values() if kind.engine == engine)
