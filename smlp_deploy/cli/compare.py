"""smlp-compare: which precision to ship. Every artifact of an export that runs here, its top-1 on a labeled folder
(as smlp-eval measures it) against its throughput (as smlp-bench times it, eager PyTorch FP32 in the same rounds);
the Pareto front of the two, and the artifact to ship: the fastest within the budget of top-1 below FP32's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..bench.choice import DEFAULT_BATCH, DEFAULT_MAX_DROP
from ..records import to_json
from .common import positive_int, run_main
from .requires import require_extra

FLAGS = {"export_dir": "EXPORT_DIR", "data": "--data", "max_top1_drop": "--max-top1-drop", "plot": "--plot",
         "device": "--device", "sorted_order": "--sorted-classes", "batch_sizes": "--batch-size",
         "artifacts": "EXPORT_DIR"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-compare", description=__doc__)
    p.add_argument("export_dir", type=Path, metavar="EXPORT_DIR", help="an export folder (smlp-export --out)")
    p.add_argument("--data", type=Path, required=True,
                   help="labeled folder: DIR/<class>/<image>, each class folder named by the class's index, label "
                   "or (ImageNet) WordNet id")
    p.add_argument("--max-top1-drop", type=float, default=DEFAULT_MAX_DROP, metavar="POINTS",
                   help=f"the budget: ship the fastest artifact at most POINTS of top-1 below model.onnx (default: "
                   f"{DEFAULT_MAX_DROP:g})")
    p.add_argument("--sorted-classes", action="store_true",
                   help="map the class folders in sorted order to outputs 0, 1, ... (models trained that way)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH,
                   help=f"the batch size throughput is timed at (default: {DEFAULT_BATCH})")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--iters", type=positive_int, help="timed calls per artifact")
    timing.add_argument("--duration", type=float, default=3.0,
                        help="seconds of timed calls per artifact, at least 5 calls (default: 3)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: every core this process may use)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--plot", type=Path, metavar="PATH",
                   help="also draw top-1 against throughput, the Pareto front and the artifact to ship (PNG, SVG or "
                   "PDF; needs matplotlib: pip install 'smlp-deploy[bench]')")
    p.add_argument("--quiet", action="store_true", help="no progress")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plot:
        require_extra("plot", "bench")
    from ..bench.choice import compare_precisions, plot_choice  # torch: after the arguments are known to be usable

    report = compare_precisions(args.export_dir, args.data, max_top1_drop=args.max_top1_drop,
                                batch_size=args.batch_size, duration_s=args.duration, iters=args.iters,
                                device=args.device, threads=args.threads, sorted_order=args.sorted_classes,
                                quiet=args.quiet, log=(lambda line: None) if args.quiet else
                                (lambda line: print(line, file=sys.stderr)))
    print(json.dumps(to_json(report), indent=2) if args.json else report.table())
    if args.plot:
        print(f"wrote {plot_choice(report, args.plot)}", file=sys.stderr if args.json else sys.stdout)
    return 0


entry_point = run_main(main, FLAGS)
