"""The summary ``smlp-export`` prints at the end of an export, a build from ONNX, or a verification of engines."""

from __future__ import annotations

from ..budget_record import BudgetRecord, describe_smoothed, describe_steps
from ..export.job import ExportResult
from ..manifest import UNVERIFIED
from ..progress import format_table
from ..tensorrt.flavours import FLAVOURS


def export_summary(result: ExportResult) -> str:
    """What an export wrote and how each artifact checked out, for the terminal: one table of artifacts, one of
    their parity on other backends, and each TensorRT flavour's engines with the commands that finish them."""
    rows = []
    for a in result.manifest.artifacts:
        p = a.parity
        rows.append([
            a.path, a.format, a.precision, f"{a.bytes / 2**20:.1f} MiB",
            f"{a.build_seconds:.1f} s" if a.build_seconds is not None else "-",
            f"{p.rel_max_abs_diff:.1e}" if p else "-", f"{p.cosine:.6f}" if p else "-",
            f"{p.top1_agreement:.0%}" if p else "-", f"{a.accuracy.top1:.2%} top-1" if a.accuracy else "-",
        ])
        if a.status == UNVERIFIED:
            rows[-1][5:8] = ["not yet verified on a GPU", "", ""]
    headers = ["artifact", "format", "precision", "size", "build", "max|diff|/scale", "cosine", "top-1 agree",
               "accuracy"]
    lines = [format_table(headers, rows)]
    checks = [[a.path, f"{c.backend} {c.precision}", c.reference, f"{c.parity.rel_max_abs_diff:.1e}",
               f"{c.parity.cosine:.6f}", f"{c.parity.top1_agreement:.0%}"]
              for a in result.manifest.artifacts for c in a.backends or []]
    if checks:
        lines += ["", format_table(["artifact", "runs on", "against", "max|diff|/scale", "cosine", "top-1 agree"],
                                   checks)]
    budget = result.manifest.accuracy_budget
    if budget is not None:
        lines += ["", budget_summary(budget)]
    for engines in result.manifest.engines:
        title = FLAVOURS[engines.flavour].title
        lines += ["", f"{title} engines: {engines.status}" + (f": {engines.reason}" if engines.reason else "")]
        if engines.commands:
            lines.append(f"  to finish, in {result.out_dir}:" if engines.status == "skipped" else
                         f"  to verify on a GPU they run on, or rebuild, in {result.out_dir}:")
            lines += [f"    {c}" for c in engines.commands]
    return "\n".join(lines)



def budget_summary(budget: BudgetRecord) -> str:
    """The accuracy budget and, per artifact, the metric after each remedy and the layers kept in float."""
    what = (f"at most {budget.points:g} points of top-1 below FP32's {budget.reference:.2f}%" if
            budget.metric == "top1-drop" else f"at least {budget.points:g}% top-1 agreement with FP32")
    smoothed = (f"; smoothed {len(budget.smoothing)} layer(s): {describe_smoothed(budget.smoothing)}"
                if budget.smoothing else "")
    rows = [[o.artifact, describe_steps(o.steps),
             ", ".join(f.module or f.node for f in o.float_layers) or "none"] for o in budget.outcomes]
    return "\n".join([f"accuracy budget: {what}, on {budget.images} images of {budget.data}{smoothed}",
                      format_table(["artifact", "budget's metric", "kept in float"], rows)])
