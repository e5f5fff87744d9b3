"""smlp-bench: latency and throughput of sMLPNet across backends, precisions and batch sizes."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..bench.peers import OpenVINODirect
from ..bench.report import format_report, read_json, write_csv, write_json, write_plot
from ..bench.results import BenchReport
from ..bench.targets import BACKENDS, DEFAULT_BACKENDS, PRECISIONS
from ..models.variants import ALIASES, VARIANTS
from ..runtime.backends.registry import BACKENDS as RUNTIME_BACKENDS
from .common import positive_int, run_main
from .requires import require_backend, require_extra

T = TypeVar("T")
FLAGS = {"report": "--from-json", "backends": "--backends", "precisions": "--precision",
         "batch_sizes": "--batch-sizes", "artifacts": "--artifacts", "variant": "--variant", "plot": "--plot",
         "device": "--device"}


def _list(kind: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    def parse(text: str) -> tuple[T, ...]:
        return tuple(kind(part) for part in text.split(",") if part)

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smlp-bench", description=__doc__,
        epilog="Eager PyTorch FP32 (and on GPUs eager FP16 and torch.compile) is always measured in the same run: "
               "every figure gets a ratio against it.")
    p.add_argument("--variant", default="tiny", choices=sorted(VARIANTS) + sorted(ALIASES),
                   help="model to export when --artifacts is not given (default: tiny)")
    p.add_argument("--artifacts", type=Path, help="an export directory (smlp-export --out); default: export to a "
                   "temporary directory (fp32, and fp16 when asked)")
    p.add_argument("--backends", type=_list(str),
                   help=f"comma-separated: {', '.join(BACKENDS)} (default: all but torch.compile and "
                   "openvino-direct, the peers timed beside the toolkit's paths)")
    p.add_argument("--precision", "--precisions", dest="precisions", type=_list(str), default=("fp32",),
                   help=f"comma-separated: {', '.join(PRECISIONS)} (default: fp32); bf16 runs the FP32 file on "
                   "backends that compute in it (openvino) and eager PyTorch")
    p.add_argument("--batch-sizes", type=_list(int), default=(1, 8, 32), help="comma-separated (default: 1,8,32)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default: 3)")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--iters", type=positive_int, help="timed calls per point")
    timing.add_argument("--duration", type=float, default=3.0,
                        help="seconds of timed calls per point, at least 5 calls (default: 3)")
    p.add_argument("--end-to-end", action="store_true",
                   help="also time JPEG bytes -> top-5 (500x375 photos) and report the preprocessing share")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: every core this process may use)")
    p.add_argument("--json", type=Path, help="the full report as JSON, written as each batch size is measured, "
                   "so an error or Ctrl-C keeps what was measured (default: beside --plot, as bench.json beside "
                   "bench.png, else smlp-bench-DATE-TIME.json here)")
    p.add_argument("--csv", type=Path, help="write one row per result as CSV")
    p.add_argument("--plot", type=Path, help="write latency and throughput plots as PNG (needs matplotlib: pip install "
                   "'smlp-deploy[bench]')")
    p.add_argument("--from-json", type=Path, metavar="REPORT",
                   help="time nothing: show a report an earlier run wrote (and write its --csv, --plot), also what a "
                   "stopped run left")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plot:
        require_extra("plot", "bench")
    if args.from_json:
        report, saved = read_json(args.from_json), args.json
    else:
        _require_backends(args.backends or ())
        saved = args.json or (args.plot.with_suffix(".json") if args.plot else _default_json())
        report = _run(args, saved)
    print(format_report(report))
    for path, write in ((saved, write_json), (args.csv, write_csv), (args.plot, write_plot)):
        if path:
            write(report, path)
            print(f"wrote {path}")
    return 0


def _run(args: argparse.Namespace, saved: Path) -> BenchReport:
    """The benchmark, its report kept in ``saved`` as it grows (``complete`` once the caller writes it last): what
    was measured survives an error or Ctrl-C."""
    from ..bench.runner import BenchConfig, run_benchmark  # torch: not needed to redraw a saved report

    print(f"results: {saved}, written as each batch size is measured (redraw: smlp-bench --from-json {saved})",
          file=sys.stderr, flush=True)
    config = BenchConfig(variant=args.variant, backends=args.backends or DEFAULT_BACKENDS,
                         precisions=args.precisions, batch_sizes=args.batch_sizes, artifacts=args.artifacts,
                         warmup=args.warmup, iters=args.iters, duration_s=args.duration, end_to_end=args.end_to_end,
                         device=args.device, threads=args.threads)
    saved_rows: int | None = None  # how many rows the last write saved (None: nothing written yet)

    def save(report: BenchReport) -> None:
        nonlocal saved_rows
        write_json(report, saved)
        saved_rows = len(report.results)

    try:
        return run_benchmark(config, log=lambda line: print(line, file=sys.stderr, flush=True), on_update=save)
    except BaseException:
        if saved_rows is not None:
            print(f"the {saved_rows} row(s) measured are in {saved}: smlp-bench --from-json {saved}", file=sys.stderr,
                  flush=True)
        raise


def _require_backends(names: tuple[str, ...]) -> None:
    """The backends named in --backends that run on CPUs can run here (their library imports); GPU-only ones are
    skipped with the reason where there is no GPU, as the defaults are."""
    for name in names:
        runtime = "openvino" if name == OpenVINODirect.name else name  # the peer calls the same library
        info = RUNTIME_BACKENDS.get(runtime)
        if info is not None and "cpu" in info.devices:
            require_backend("backends", runtime)


def _default_json() -> Path:
    return Path(time.strftime("smlp-bench-%Y%m%d-%H%M%S.json"))


entry_point = run_main(main, FLAGS)
