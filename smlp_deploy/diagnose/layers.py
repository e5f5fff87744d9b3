"""Where the error of a reduced-precision artifact enters: its intermediate tensors against PyTorch's, module by
module.

The PyTorch model of an export is run with a forward hook on every module; the artifact is run on ONNX Runtime
with the tensors that are those modules' outputs exposed as extra graph outputs (``scopes`` matches them). Each
row compares one module's output: cosine and relative error against PyTorch, and, for a module whose Conv/MatMul/
Gemm input is quantized, that input's values (PyTorch's) against the range the artifact's Q/DQ scale allows:
the share of values beyond it (saturated) and of nonzero values it rounds to zero (underflow); those values
are the FP32 ONNX model's (``model.onnx`` of the export), read by tensor name. The error enters
where a row's relative error rises most above every row before it (:meth:`LayerReport.entry`).

Both ONNX models run without ONNX Runtime's graph optimizations: each node computed as the graph writes it (Q/DQ
as the ONNX specification defines them, which TensorRT's explicit quantization implements). With optimizations on,
an exposed tensor blocks fusions and moved INT8 logits by up to 0.04 on the digits; off, exposing leaves the logits
of every fp32-parts artifact bit for bit as they were (tests/test_layer_report.py). Artifacts with fp16 float parts
are not run faithfully on the CPU provider either way: it computes fp16 nodes in fp32 between casts, and rounds to
fp16 only where a tensor leaves such a run of nodes, which exposing changes (measured on the digits: 5.5e-4 for
FP16, 0.05 for INT8 and 0.07 for FP8 with fp16 parts, largest logit difference).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import torch

from ..artifacts import ONNX_KINDS
from ..calibration.tensors import Runner
from ..errors import ArtifactError
from ..export.scopes import module_tensors, scoped_graph
from ..export_folder import ExportFolder
from ..manifest import Manifest
from ..models.registry import create_model
from ..models.smlpnet import Block, Head, SMLPNet, Stage
from ..progress import format_table
from .ranges import quantized_ranges

# A matched tensor whose FP32 values differ from the module's by more than this is not the module's output.
MATCH_TOLERANCE = 1e-3
DETAILS = ("blocks", "layers")


@dataclass(frozen=True)
class LayerRow:
    module: str  # the PyTorch module path
    tensor: str  # the ONNX tensor that is its output
    cosine: float  # mean over images of the flattened output's cosine against PyTorch
    relative_error: float  # mean over images of |artifact - pytorch| / |pytorch|
    quantized_input: str | None = None  # the activation its Conv/MatMul/Gemm reads, where the artifact quantizes it
    calibrated_range: tuple[float, float] | None = None  # what that input's Q/DQ scale represents
    observed_range: tuple[float, float] | None = None  # PyTorch's values of that input on the images
    saturated: float | None = None  # share of those values beyond the calibrated range
    underflow: float | None = None  # share of nonzero values that round to zero
    same_as: list[str] = field(default_factory=list)  # enclosing modules whose output is this same tensor


@dataclass(frozen=True)
class LayerReport:
    export: str
    artifact: str
    images: int
    detail: str
    rows: list[LayerRow]  # in the order the modules finish in PyTorch's forward
    logits_cosine: float
    logits_relative_error: float

    def entry(self) -> LayerRow:
        """The row whose relative error rises most above that of every row before it: where the error enters."""
        best, best_rise, worst = self.rows[0], -np.inf, 0.0
        for row in self.rows:
            rise = row.relative_error - worst
            if rise > best_rise:
                best, best_rise = row, rise
            worst = max(worst, row.relative_error)
        return best

    def table(self) -> str:
        rows = [[" = ".join([r.module, *r.same_as]), f"{r.cosine:.4f}", f"{r.relative_error:.2e}",
                 f"{r.observed_range[0]:.3g}..{r.observed_range[1]:.3g}" if r.observed_range else "",
                 f"{r.calibrated_range[0]:.3g}..{r.calibrated_range[1]:.3g}" if r.calibrated_range else "",
                 f"{r.saturated:.2%}" if r.saturated is not None else "",
                 f"{r.underflow:.1%}" if r.underflow is not None else ""] for r in self.rows]
        rows.append(["logits", f"{self.logits_cosine:.4f}", f"{self.logits_relative_error:.2e}", "", "", "", ""])
        entry = self.entry()
        return "\n".join([
            format_table(["module", "cosine", "rel. error", "input range", "calibrated", "saturated", "to zero"],
                         rows),
            f"the error enters at {entry.module} (relative error {entry.relative_error:.2e})",
        ])


def layer_report(export_dir: str | Path, artifact: str, images: np.ndarray, *,
                 detail: str = "blocks") -> LayerReport:
    """Compare ``artifact`` (an ONNX file of the export in ``export_dir``: FP16, either INT8 form, FP8) with the
    export's PyTorch model on ``images`` (preprocessed, [N, 3, H, W]), module by module: ``detail="blocks"`` the
    stages, blocks and head, ``"layers"`` every module whose output the artifact still computes."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    folder = Path(export_dir)
    path = _artifact(folder, artifact)
    model = reference_model(ExportFolder.open(folder).manifest)
    proto = onnx.load(str(path))
    present = {t for node in proto.graph.node for t in node.output}
    matched = module_tensors(scoped_graph(model), model, present)
    wanted = {m: t for m, t in matched.outputs.items() if detail == "layers" or _is_block(model, m)}
    reference, logits = _pytorch(model, wanted, images)
    ranges = quantized_ranges(proto)
    quantized = {m: t for m, ts in matched.gemm_inputs.items() if (t := next((t for t in ts if t in ranges), None))}
    fp32 = Runner(onnx.load(str(folder / "model.onnx")), [*wanted.values(), *quantized.values()],
                  optimized=False)(images)
    wanted = {m: t for m, t in wanted.items() if _relative_error(fp32[t], reference[m]) < MATCH_TOLERANCE}
    values = Runner(proto, list(wanted.values()), optimized=False)(images)
    rows: list[LayerRow] = []
    for module in (m for m in reference if m in wanted):
        tensor = wanted[module]
        if rows and rows[-1].tensor == tensor:  # an enclosing module that ends where its last part does
            rows[-1] = replace(rows[-1], same_as=[*rows[-1].same_as, module])
            continue
        row = LayerRow(module, tensor, _cosine(values[tensor], reference[module]),
                       _relative_error(values[tensor], reference[module]))
        if module in quantized:
            name = quantized[module]
            grid, observed = ranges[name], fp32[name]
            saturated, underflow = grid.saturation(observed)
            row = replace(row, quantized_input=name, calibrated_range=(grid.low, grid.high),
                          observed_range=(float(observed.min()), float(observed.max())), saturated=saturated,
                          underflow=underflow)
        rows.append(row)
    out = values[next(iter(values))]
    return LayerReport(str(folder), path.name, len(images), detail, rows, _cosine(out, logits),
                       _relative_error(out, logits))


def reference_model(manifest: Manifest) -> SMLPNet:
    """The export's PyTorch model, as the export built it: its checkpoint, or its seeded random weights."""
    info = manifest.model
    if info.checkpoint is not None and not Path(info.checkpoint.path).is_file():
        raise ArtifactError(f"the export's checkpoint {info.checkpoint.path!r} is not there any more: the reference "
                            "is the PyTorch model the export was made from", parameter="export_dir")
    torch.manual_seed(info.seed or 0)
    return create_model(info.name, num_classes=info.num_classes, image_size=info.image_size,
                        checkpoint=info.checkpoint.path if info.checkpoint else None)


def _artifact(folder: Path, name: str) -> Path:
    """The reduced-precision ONNX file ``name`` in ``folder``: one the export wrote, or one written there by hand
    from its model.onnx (a refused artifact, quantized again to be looked at)."""
    names = [k.file_name for k in ONNX_KINDS if k.precision != "fp32"]
    there = [n for n in names if (folder / n).is_file()]
    if Path(name).name not in there:
        raise ArtifactError(f"{name!r} is not a reduced-precision ONNX artifact in {folder}; there is: "
                            f"{', '.join(there) or 'none (export with fp16, int8 or fp8)'}", parameter="artifact")
    return folder / Path(name).name


def _is_block(model: SMLPNet, path: str) -> bool:
    return isinstance(model.get_submodule(path), (Block, Stage, Head))


def _pytorch(model: SMLPNet, modules: dict[str, str], images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """PyTorch's output of each of ``modules``, in the order they finish, and the logits."""
    outputs: dict[str, np.ndarray] = {}
    hooks = []
    for path in modules:
        def hook(_: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor, path: str = path) -> None:
            outputs[path] = output.detach().numpy().copy()
        hooks.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            logits = model(torch.from_numpy(images)).numpy()
    finally:
        for handle in hooks:
            handle.remove()
    return outputs, logits


def _per_image(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)


def _cosine(values: np.ndarray, reference: np.ndarray) -> float:
    a, b = _per_image(values, reference)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)))


def _relative_error(values: np.ndarray, reference: np.ndarray) -> float:
    a, b = _per_image(values, reference)
    return float(np.mean(np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-30)))

