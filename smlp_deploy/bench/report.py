"""A benchmark report as a terminal table, JSON, CSV, and a plot a person reads at a glance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_path, write_json_atomic
from ..progress import format_table
from ..records import RecordError, from_json, to_json
from .results import BenchReport, BenchRow

CSV_FIELDS = ["backend", "precision", "artifact", "device", "batch_size", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
              "std_ms", "throughput_ips", "speedup", "gflops", "peak_fraction", "matmul_peak_gflops",
              "peak_rss_mib", "peak_gpu_mib", "e2e_ms", "preprocess_share", "h2d_ms", "gpu_compute_ms", "d2h_ms",
              "note"]


def format_report(report: BenchReport) -> str:
    env, model = report.env, report.model
    gpu = env["gpu"]["name"] if env["gpu"] else "no GPU"
    head = (f"{model.name} at {model.image_size} ({model.macs / 1e9:.2f} GMACs/image) "
            f"on {env['cpu']} ({env['threads']} threads), {gpu}; matmul peak "
            + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in report.peak_gflops.items()))
    rows = []
    for r in report.results:
        lat, e2e = r.latency_ms, r.end_to_end
        rows.append([r.label + (" *" if r.note else ""), r.batch_size, f"{lat.p50:.2f}", f"{lat.p90:.2f}",
                     f"{lat.p99:.2f}",
                     f"±{lat.std:.2f}", f"{r.throughput_ips:.1f}", _ratio(r.speedup), f"{r.gflops:.0f}",
                     f"{r.peak_fraction:.0%}", f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib else "-",
                     f"{e2e.latency_ms:.1f} ({e2e.preprocess_share:.0%})" if e2e else "-", _device_split(r)])
    table = format_table(["target", "batch", "p50 ms", "p90 ms", "p99 ms", "std", "img/s", "vs eager fp32",
                          "GFLOP/s", "of peak", "RSS MiB", "end-to-end ms (preproc)",
                          "GPU compute ms (+H2D +D2H)"], rows)
    notes = [f"* {note}" for note in dict.fromkeys(r.note for r in report.results if r.note)]
    skipped = [f"skipped {s.backend} {s.precision}: {s.reason}" for s in report.skipped]
    stopped = [] if report.complete else [f"partial: the run stopped before its end; {len(report.results)} row(s) "
                                          "measured"]
    return "\n".join([head, *stopped, "", table, *notes, *([""] + skipped if skipped else [])])


def _device_split(row: BenchRow) -> str:
    times = row.device_times
    return f"{times.compute_ms:.2f} (+{times.h2d_ms:.2f} +{times.d2h_ms:.2f})" if times else "-"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def write_json(report: BenchReport, path: Path) -> None:
    write_json_atomic(Path(path), to_json(report))


def read_json(path: Path) -> BenchReport:
    """A report an earlier run wrote with :func:`write_json`, checked field by field."""
    try:
        data = json.loads(Path(path).read_text())
        return from_json(BenchReport, data)
    except OSError as exc:
        raise InputError(f"benchmark report {str(path)!r} cannot be read: {exc.strerror or exc}",
                         parameter="report") from exc
    except (ValueError, RecordError) as exc:
        raise InputError(f"{str(path)!r} is not a benchmark report written by smlp-bench --json ({exc})",
                         parameter="report") from exc


def write_csv(report: BenchReport, path: Path) -> None:
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        for r in report.results:
            lat, e2e = r.latency_ms, r.end_to_end
            writer.writerow({**{k: getattr(r, k, None) for k in CSV_FIELDS},
                             **{f"{k}_ms": getattr(lat, k) for k in ("p50", "p90", "p99", "mean", "std")},
                             "e2e_ms": e2e.latency_ms if e2e else None,
                             "preprocess_share": e2e.preprocess_share if e2e else None,
                             "h2d_ms": r.device_times.h2d_ms if r.device_times else None,
                             "gpu_compute_ms": r.device_times.compute_ms if r.device_times else None,
                             "d2h_ms": r.device_times.d2h_ms if r.device_times else None})


def write_plot(report: BenchReport, path: Path) -> None:
    """Left: p50 latency against batch size, one line per target (log-log). Right: throughput at each batch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError as exc:
        raise InputError("plots need matplotlib: pip install 'smlp-deploy[bench]'", parameter="plot") from exc
    labels = list(dict.fromkeys(r.label for r in report.results))
    batches = sorted({r.batch_size for r in report.results})
    by_key = {(r.label, r.batch_size): r for r in report.results}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    # One colour per target, the same in both panels: matplotlib's default cycle repeats after 10 (a CPU matrix of
    # backends x precisions has 13 rows).
    palette = plt.get_cmap("tab20")
    colours = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    for label in labels:
        points = [(b, by_key[label, b].latency_ms) for b in batches if (label, b) in by_key]
        left.errorbar([b for b, _ in points], [lat.p50 for _, lat in points],
                      yerr=[[lat.p50 - lat.min for _, lat in points], [lat.p90 - lat.p50 for _, lat in points]],
                      marker="o", capsize=3, label=label, color=colours.get(label))
    left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency p50, ms (bars: min to p90)",
             title="Latency", xticks=batches, xticklabels=[str(b) for b in batches])
    for axis in (left.xaxis, left.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        xs = [j + i * width for j, b in enumerate(batches) if (label, b) in by_key]
        ys = [by_key[label, b].throughput_ips for b in batches if (label, b) in by_key]
        bars = right.bar(xs, ys, width, label=label, color=colours.get(label))
        right.bar_label(bars, fmt="%.0f", fontsize=7)
    right.set(xticks=[j + width * (len(labels) - 1) / 2 for j in range(len(batches))],
              xticklabels=[f"batch {b}" for b in batches], ylabel="images/s", title="Throughput")
    right.grid(True, axis="y", alpha=0.3)
    env = report.env
    fig.suptitle(f"{report.model.name} {report.model.image_size}px: {env['gpu']['name'] if env['gpu'] else env['cpu']}"
                 f" ({env['threads']} threads)", fontsize=11)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
