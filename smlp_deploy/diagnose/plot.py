"""The layer report as a picture: each module's relative error against PyTorch, in depth order."""

from __future__ import annotations

from pathlib import Path

from .layers import LayerReport


def plot_layer_report(report: LayerReport, path: str | Path) -> Path:
    """Relative error (log scale) against depth, the entry point of the error marked; saved to ``path`` (PNG,
    SVG or PDF, by its suffix). Needs matplotlib (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = [max(row.relative_error, 1e-9) for row in report.rows]
    entry = report.rows.index(report.entry())
    figure, axes = plt.subplots(figsize=(max(6.0, 0.12 * len(errors)), 4.0))
    axes.plot(range(len(errors)), errors, marker="o", markersize=3)
    axes.plot([entry], [errors[entry]], marker="o", markersize=9, fillstyle="none", color="red",
              label=f"error enters: {report.rows[entry].module}")
    axes.set_yscale("log")
    axes.set_xticks(range(len(errors)), [row.module for row in report.rows], rotation=90, fontsize=6)
    axes.set_ylabel("relative error against PyTorch")
    axes.set_title(f"{report.artifact} on {report.images} images ({report.export})", fontsize=8)
    axes.legend(fontsize=7)
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
