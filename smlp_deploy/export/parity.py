"""How closely an artifact's logits follow the PyTorch reference, and the thresholds each precision must meet.

Non-finite logits (NaN, inf) are refused before any figure is computed: NaN compares false with everything, so
a threshold written ``cosine < floor`` would let all-NaN logits through, and the report would hold NaN, which JSON
cannot (manifest.json is strict JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParityError
from ..manifest import ParityReport


def compare(reference: np.ndarray, candidate: np.ndarray, *, artifact: str = "the candidate",
            names: Sequence[str] | None = None, reference_name: str = "the PyTorch reference") -> ParityReport:
    """How closely ``candidate`` logits (of ``artifact``) follow ``reference`` logits, image by image; a
    :class:`ParityError` naming the side, the count and the inputs (``names``, one per row) where either holds a
    non-finite value."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(candidate, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2:
        raise ParityError(f"logits shapes differ: reference {ref.shape}, candidate {out.shape}")
    check_finite(ref, reference_name, names)
    check_finite(out, artifact, names)
    diff = np.abs(ref - out)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.sum(ref * out, axis=1) / np.maximum(norms, 1e-30)
    k = min(5, ref.shape[1])
    top_ref, top_out = np.argsort(-ref, axis=1)[:, :k], np.argsort(-out, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)]
    return ParityReport(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        rel_max_abs_diff=float(diff.max() / max(np.abs(ref).max(), 1e-30)),
        cosine=float(cosine.min()),
        top1_agreement=float(np.mean(top_ref[:, 0] == top_out[:, 0])),
        top5_agreement=float(np.mean(overlap)),
        n_inputs=int(ref.shape[0]),
    )


@dataclass(frozen=True)
class Thresholds:
    max_rel_diff: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None

    def failures(self, report: ParityReport) -> list[str]:
        """What misses a threshold; written ``not (value within bound)``, so a NaN that reached a report fails."""
        found = []
        if self.max_rel_diff is not None and not report.rel_max_abs_diff <= self.max_rel_diff:
            found.append(f"max abs diff {report.rel_max_abs_diff:.2e} of the logits' scale > {self.max_rel_diff:.0e}")
        if self.min_cosine is not None and not report.cosine >= self.min_cosine:
            found.append(f"cosine {report.cosine:.5f} < {self.min_cosine}")
        if self.min_top1 is not None and not report.top1_agreement >= self.min_top1:
            found.append(f"top-1 agreement {report.top1_agreement:.1%} < {self.min_top1:.0%}")
        return found


# The floors, from docs/benchmarks/parity-floors.json (docs/benchmarks/parity_floors.py: the test and tiny variants
# with random weights and the trained digits model, every INT8 method and form). A reduced precision's cosine floor
# is 1 - 4 x (1 - its worst measured cosine), rounded down: room for models and calibration sets not measured.
# * INT8, worst 0.98760 (the digits model's CPU form, entropy; 0.9989 and up on random weights): floor 0.95. Held
#   on the photographs only: random tensors lie outside any calibrated range by design. No top-1 bound: random
#   weights give near-tied logits (80% measured on sMLPNet-T's 5 photos); accuracy is measured on labeled images.
# * FP8 (E4M3, 3 mantissa bits: each value off by up to 1/16 of itself, where INT8's error is a fixed step of the
#   calibrated range), worst 0.99527 (random weights; the digits 0.99686): floor 0.98, on every verification input,
#   random tensors included (they stay within its 448 scales). No top-1 bound, as INT8.
# * FP16 and FP32 measure 1 - 2.9e-7 in cosine and 7.2e-7 of the logits' scale here, on ONNX Runtime's CPU kernels.
#   Their floors (cosine 0.999 and top-1 99%; 1e-4 and every top-1) also gate TensorRT engines verified on a GPU,
#   whose kernels (FP16 accumulation, reduced-precision tactics) were not measured: they stay where they were.
# One INT8 Q/DQ graph on two runtimes (OpenVINO against ONNX Runtime), float parts in fp32 on both: the arithmetic
# is the same, the rounding order and requantization differ. Worst-photo cosine measured on model.int8.cpu.onnx:
# 0.99999 (the digits model, tests/test_openvino.py), 0.99963 (sMLPNet-T, random weights; docs/cpu.md);
# OpenVINO on the TensorRT form, which it computes wrongly: 0.086. Top-1 is not held: with random weights one photo
# of five sits on a near-tie and flips.
SAME_GRAPH = "int8, same graph"
THRESHOLDS = {
    "fp32": Thresholds(max_rel_diff=1e-4, min_top1=1.0),
    "fp16": Thresholds(min_cosine=0.999, min_top1=0.99),
    "int8": Thresholds(min_cosine=0.95),
    "fp8": Thresholds(min_cosine=0.98),
    SAME_GRAPH: Thresholds(min_cosine=0.999),
}


def check(report: ParityReport, precision: str, artifact: str) -> None:
    """Raise :class:`ParityError` if ``report`` misses the thresholds for ``precision``."""
    failures = THRESHOLDS[precision].failures(report)
    if failures:
        raise ParityError(f"{artifact} ({precision}) fails parity against PyTorch: " + "; ".join(failures))


def check_finite(logits: np.ndarray, source: str, names: Sequence[str] | None = None) -> None:
    """Raise :class:`ParityError` if ``logits`` (of ``source``) hold NaN or inf, naming how many values and on which
    inputs (``names``, one per row; their row numbers otherwise)."""
    bad = ~np.isfinite(logits)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    label = list(names) if names is not None else [f"#{i}" for i in range(len(logits))]
    listed = ", ".join(label[i] for i in rows[:6]) + (f" and {len(rows) - 6} more" if len(rows) > 6 else "")
    raise ParityError(f"{source} gives {int(bad.sum())} non-finite logits (NaN or inf) of {bad.size}, on {len(rows)} "
                      f"of {len(logits)} verification inputs: {listed}")
