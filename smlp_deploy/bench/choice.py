"""Which precision to ship: every artifact of an export that runs here, its accuracy on a labeled folder against its
speed, the Pareto front of the two, and the artifact to ship under a stated budget.

Accuracy is smlp-eval's (``evaluation.evaluate``: one decoding pass feeds every artifact); speed is smlp-bench's
(``run_benchmark`` at one batch size, each artifact on its own backend, eager PyTorch FP32 timed in the same
rounds). The artifact to ship is the fastest whose top-1 is at most ``max_top1_drop`` points below that of
model.onnx, the FP32 artifact. An artifact timed on a runtime it is not meant for (a TensorRT Q/DQ form on ONNX
Runtime: ``BenchRow.note``) is listed, but neither on the front nor chosen.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifacts import format_of, onnx_artifact
from ..errors import InputError
from ..fileio import atomic_path
from ..imagefolder import LabeledFolder
from ..manifest import MANIFEST_NAME, Artifact, Manifest
from ..progress import format_table
from ..runtime.backends.registry import default_backend
from ..runtime.preprocess import Preprocessor
from .results import BenchRow

DEFAULT_MAX_DROP = 1.0  # points of top-1 below FP32
DEFAULT_BATCH = 8
REFERENCE = onnx_artifact("fp32").file_name  # model.onnx: the budget is read against its top-1


@dataclass(frozen=True)
class PrecisionRow:
    artifact: str
    precision: str
    backend: str  # as the benchmark labels the row
    top1: float
    top5: float
    top1_drop: float  # points below model.onnx's top-1
    latency_ms: float  # p50 at the report's batch size
    throughput_ips: float
    speedup: float | None  # eager PyTorch FP32's p50 over this row's, same rounds
    note: str | None = None  # why this row's speed is not the artifact's (timed on a runtime it is not meant for)
    pareto: bool = False  # no other row is both faster and more accurate
    within_budget: bool = False


@dataclass
class PrecisionReport:
    export: str
    data: str
    images: int
    batch_size: int
    max_top1_drop: float
    machine: str
    rows: list[PrecisionRow] = field(default_factory=list)
    choice: str | None = None  # the artifact to ship
    reason: str = ""

    def table(self) -> str:
        rows = [[r.artifact + (" *" if r.note else ""), r.backend, f"{r.top1:.2%}", f"{r.top1_drop:+.2f}",
                 f"{r.throughput_ips:.1f}", f"{r.latency_ms:.2f}", f"{r.speedup:.2f}x" if r.speedup else "-",
                 "yes" if r.pareto else "", "ship" if r.artifact == self.choice else ""] for r in self.rows]
        notes = [f"* {note}" for note in dict.fromkeys(r.note for r in self.rows if r.note)]
        return "\n".join([
            f"{self.export} on {self.images} images of {self.data}, batch {self.batch_size}, {self.machine}", "",
            format_table(["artifact", "timed on", "top-1", "drop (points)", "img/s", "p50 ms", "vs eager fp32",
                          "Pareto front", ""], rows), *notes, "", self.reason])


def compare_precisions(export_dir: str | Path, data: str | Path, *, max_top1_drop: float = DEFAULT_MAX_DROP,
                       batch_size: int = DEFAULT_BATCH, duration_s: float = 3.0, iters: int | None = None,
                       warmup: int = 3, device: str | None = None, threads: int | None = None,
                       sorted_order: bool = False, quiet: bool = False,
                       log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> PrecisionReport:
    """Accuracy on the labeled folder ``data`` and throughput at ``batch_size`` of every artifact of the export in
    ``export_dir`` that runs here, with the Pareto front and the artifact to ship within ``max_top1_drop``."""
    from ..evaluation import runs_here  # torch: the command's --help and argument errors do without it
    from .runner import BenchConfig, run_benchmark

    export_dir = Path(export_dir)
    if not (export_dir / MANIFEST_NAME).is_file():
        raise InputError(f"{str(export_dir)!r} is not an export folder (no {MANIFEST_NAME}): make one with "
                         "smlp-export", parameter="export_dir")
    if not 0 <= max_top1_drop <= 100:
        raise InputError(f"the budget is in points between 0 and 100, got {max_top1_drop:g}",
                         parameter="max_top1_drop")
    manifest = Manifest.load(export_dir / MANIFEST_NAME)
    folder = LabeledFolder.scan(data)
    runnable, elsewhere = runs_here(manifest)
    if elsewhere:
        log(f"not compared here (no GPU that runs them): {', '.join(a.path for a in elsewhere)}")
    if not any(a.path == REFERENCE for a in runnable):  # before any image is read or any call timed
        raise InputError(f"{export_dir} has no {REFERENCE} that runs here to compare against", parameter="export_dir")
    accuracy = _accuracy(export_dir, manifest, runnable, folder, device, sorted_order, quiet)
    backends = {a.path: default_backend_name(a) for a in runnable}
    config = BenchConfig(backends=tuple(dict.fromkeys(backends.values())),
                         precisions=tuple(dict.fromkeys(a.precision for a in runnable)), batch_sizes=(batch_size,),
                         artifacts=export_dir, warmup=warmup, iters=iters, duration_s=duration_s, device=device,
                         threads=threads)
    bench = run_benchmark(config, log=log)
    timed = {r.artifact: r for r in bench.results if r.artifact in backends and r.backend == backends[r.artifact]}
    if REFERENCE not in timed:  # it failed to load for the benchmark: the rows need its throughput to be read
        reasons = "; ".join(s.reason for s in bench.skipped if s.backend == backends[REFERENCE])
        raise InputError(f"{export_dir}/{REFERENCE} could not be timed here: {reasons or 'no result'}",
                         parameter="export_dir")
    rows = [_row(a, accuracy[a.path], timed[a.path], accuracy[REFERENCE]) for a in runnable if a.path in timed]
    env = bench.env
    machine = f"{env['gpu']['name'] if env['gpu'] else env['cpu']} ({env['threads']} threads)"
    report = PrecisionReport(str(export_dir), str(folder.root), len(folder.samples), batch_size, max_top1_drop,
                             machine, _marked(rows, max_top1_drop))
    _choose(report)
    return report


def default_backend_name(artifact: Artifact) -> str:
    found = format_of(artifact.path)
    if found is None:
        raise InputError(f"{artifact.path} is not a file of a kind an export writes", parameter="export_dir")
    return default_backend(found).name


def _accuracy(export_dir: Path, manifest: Manifest, artifacts: list[Artifact], folder: LabeledFolder,
              device: str | None, sorted_order: bool, quiet: bool) -> dict[str, tuple[float, float]]:
    from ..evaluation import class_indices, evaluate
    from ..runtime.backends.factory import load_backend

    indices = class_indices(folder.classes, manifest.labels, manifest.model.num_classes, sorted_order=sorted_order)
    with contextlib.ExitStack() as opened:
        models = {a.path: opened.enter_context(load_backend(export_dir / a.path, device=device,
                                                            model_info=manifest.model)).run_all for a in artifacts}
        scores = evaluate(models, folder, Preprocessor(manifest.preprocess), indices, quiet=quiet)
    return {name: (score.top1, score.top5) for name, score in scores.items()}


def _row(artifact: Artifact, accuracy: tuple[float, float], timed: BenchRow,
         reference: tuple[float, float]) -> PrecisionRow:
    return PrecisionRow(artifact.path, artifact.precision, timed.label, accuracy[0], accuracy[1],
                        round(100 * (reference[0] - accuracy[0]), 4), timed.latency_ms.p50, timed.throughput_ips,
                        timed.speedup, timed.note)


def _marked(rows: list[PrecisionRow], max_top1_drop: float) -> list[PrecisionRow]:
    """Each row's place on the Pareto front of (throughput, top-1), among rows timed on their own runtime."""
    own = [r for r in rows if r.note is None]

    def dominated(row: PrecisionRow) -> bool:
        return any(o.throughput_ips >= row.throughput_ips and o.top1 >= row.top1
                   and (o.throughput_ips, o.top1) != (row.throughput_ips, row.top1) for o in own)

    return [replace(r, pareto=r.note is None and not dominated(r), within_budget=r.top1_drop <= max_top1_drop + 1e-9)
            for r in rows]


def _choose(report: PrecisionReport) -> None:
    eligible = [r for r in report.rows if r.note is None and r.within_budget]
    fp32 = next(r for r in report.rows if r.artifact == REFERENCE)
    budget = f"at most {report.max_top1_drop:g} points of top-1 below FP32's {fp32.top1:.2%}"
    if not eligible:
        report.reason = f"nothing to ship here within {budget}"
        return
    best = max(eligible, key=lambda r: r.throughput_ips)
    report.choice = best.artifact
    report.reason = (f"ship {best.artifact}: the fastest here ({best.throughput_ips:.1f} img/s at batch "
                     f"{report.batch_size}, {best.throughput_ips / fp32.throughput_ips:.2f}x model.onnx) with "
                     f"{budget} (top-1 {best.top1:.2%})")


def plot_choice(report: PrecisionReport, path: str | Path) -> Path:
    """Top-1 against throughput, the Pareto front joined, the artifact to ship starred, the budget's floor dashed;
    saved to ``path`` (PNG, SVG or PDF). Needs matplotlib (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for i, row in enumerate(sorted(report.rows, key=lambda r: r.throughput_ips)):
        own = row.note is None
        axes.scatter([row.throughput_ips], [100 * row.top1], s=40, color="tab:blue" if own else "none",
                     edgecolors="tab:blue" if own else "grey", zorder=3)
        axes.annotate(row.artifact + ("" if own else " *"), (row.throughput_ips, 100 * row.top1), fontsize=7,
                      xytext=(-20, 7 if i % 2 else -13), textcoords="offset points", color="black" if own else "grey")
    front = sorted((r for r in report.rows if r.pareto), key=lambda r: r.throughput_ips)
    axes.plot([r.throughput_ips for r in front], [100 * r.top1 for r in front], color="tab:orange", zorder=2,
              label="Pareto front")
    fp32 = next(r for r in report.rows if r.artifact == REFERENCE)
    axes.axhline(100 * fp32.top1 - report.max_top1_drop, color="grey", linestyle="--", linewidth=1,
                 label=f"budget: {report.max_top1_drop:g} points below FP32")
    chosen = next((r for r in report.rows if r.artifact == report.choice), None)
    if chosen is not None:
        axes.scatter([chosen.throughput_ips], [100 * chosen.top1], s=220, marker="*", color="tab:red", zorder=4,
                     label=f"ship: {chosen.artifact}")
    axes.set(xscale="log", xlabel=f"images/s at batch {report.batch_size}", ylabel="top-1, %",
             title=f"{Path(report.export).name}: {report.images} images, {report.machine}")
    axes.title.set_fontsize(9)
    speeds = [r.throughput_ips for r in report.rows]
    axes.set_xticks([t for t in (m * 10.0**e for e in range(-1, 7) for m in (1, 2, 5))
                     if min(speeds) / 1.5 <= t <= max(speeds) * 1.5])
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    if any(r.note for r in report.rows):
        figure.text(0.01, 0.01, "* timed on a runtime it is not meant for", fontsize=7, color="grey")
    figure.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, dpi=120, format=out.suffix.lstrip(".") or "png")
    plt.close(figure)
    return out
