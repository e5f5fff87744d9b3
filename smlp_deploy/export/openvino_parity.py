"""The export's ONNX files on OpenVINO (``smlp-export --openvino``): each in FP32 and, where the CPU has bf16
instructions, in bf16, its parity measured on the verification set and recorded in the manifest.

OpenVINO chooses its own precision on CPUs with bf16 (bf16), so an ONNX file verified on ONNX Runtime in FP32 says
nothing of what OpenVINO computes: this is the check that does. bf16 is held to the FP16 thresholds against
PyTorch; FP32 to the artifact's own; an INT8 Q/DQ form, float parts in FP32, to ONNX Runtime's result on the same
graph (``parity.SAME_GRAPH``), since both run its quantized ops in int8 and only their rounding differs.

INT8 forms are not measured with bf16 float parts: on this CPU that was slower than FP32 float parts (one interleaved
run, sMLPNet-T: 63 against 49 ms at batch 1, 223 against 185 ms at batch 8) and it adds bf16's error to int8's
(cosine 0.9979 against ONNX Runtime on the digits model, where FP32 float parts give 0.99998); a Classifier asked
for it says that its parity was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import ArtifactKind
from ..cpu import bf16_missing, cpu_model, openvino_cpu_capabilities
from ..errors import BackendUnavailableError, ParityError
from ..manifest import BackendParity
from ..runtime.backends.factory import load_backend
from ..runtime.backends.openvino_backend import OpenVINOBackend
from ..runtime.backends.registry import BACKENDS
from .parity import SAME_GRAPH, THRESHOLDS, compare
from .verification import VerificationSet

BACKEND = "openvino"


@dataclass(frozen=True)
class OpenVINOPlan:
    """What ``--openvino`` measures here: the precisions, and why bf16 is left out where it is."""

    precisions: tuple[str, ...]
    skipped: str | None  # why bf16 is not measured (a CPU without bf16), None when it is

    @classmethod
    def here(cls) -> OpenVINOPlan:
        """Refuses before any work where OpenVINO cannot run."""
        reason = BACKENDS[BACKEND].unavailable()
        if reason:
            raise BackendUnavailableError(f"openvino parity cannot be measured here: {reason}", parameter="openvino")
        missing = bf16_missing(openvino_cpu_capabilities())
        return cls(("fp32",), f"bf16 not measured: {missing}") if missing else cls(("fp32", "bf16"), None)

    def applies_to(self, kind: ArtifactKind) -> bool:
        """ONNX files OpenVINO opens: not the TensorRT form of INT8 (the backend refuses it)."""
        return kind.format == "onnx" and kind.target != "tensorrt"

    def precisions_for(self, kind: ArtifactKind) -> tuple[str, ...]:
        """The precisions ``kind`` is measured in: INT8 forms with FP32 float parts only."""
        return ("fp32",) if kind.precision == "int8" else self.precisions


def measure(path: Path, kind: ArtifactKind, verification: VerificationSet,
            precisions: tuple[str, ...]) -> list[BackendParity]:
    """``path`` on OpenVINO in each of ``precisions``, against PyTorch (float forms) or against ONNX Runtime on the
    same graph (INT8 forms)."""
    inputs, reference = verification.for_precision(kind.precision)
    names, against, reference_name = verification.names(kind.precision), "pytorch", "the PyTorch reference"
    if kind.precision == "int8":
        with load_backend(path, "onnxruntime", device="cpu") as onnxruntime:
            reference, against = onnxruntime.run_all(inputs), "onnxruntime"
        reference_name = f"{path.name} on ONNX Runtime"
    records = []
    for precision in precisions:
        with load_backend(path, BACKEND, precision=precision) as backend:
            assert isinstance(backend, OpenVINOBackend), backend  # what the registry's BACKEND entry loads
            logits = backend.run_all(inputs)
            version = backend.version
        thresholds = SAME_GRAPH if against == "onnxruntime" else "fp16" if precision == "bf16" else kind.precision
        report = compare(reference, logits, artifact=f"{path.name} on {BACKEND} in {precision}", names=names,
                         reference_name=reference_name)
        records.append(BackendParity(BACKEND, precision, against, thresholds, report, version, cpu_model()))
    return records


def check(records: list[BackendParity], artifact: str) -> None:
    """Raise :class:`ParityError` for the first record that misses its thresholds."""
    for record in records:
        failures = THRESHOLDS[record.thresholds].failures(record.parity)
        if failures:
            raise ParityError(f"{artifact} on {record.backend} in {record.precision} fails parity against "
                              f"{record.reference} ({record.thresholds} thresholds): " + "; ".join(failures))
