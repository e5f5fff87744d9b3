"""What flushing an export to the disk costs (docs/export.md, "An export is a transaction").

Every file an export renames into place is flushed first (``fsync``), and its folder after, so a power loss cannot
leave a renamed but empty file. This times whole exports (``export_model``, each into a new folder, the same
arguments as ``smlp-export``) with the flushes against the same exports with ``os.fsync`` made a no-op, in one
process, interleaved in ABBA order round after round, and reports the ratio of the medians, each round's ratio,
the seconds spent inside ``fsync`` in the runs that flush, and the bytes an export writes.

    python docs/benchmarks/fsync_cost.py --variant test --fp16 --int8 --rounds 4 \
        --json docs/benchmarks/fsync-cost-test.json

The folders are made under ``--where`` (default: the system's temporary folder), which must be on the disk being
measured (a tmpfs ignores ``fsync``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from smlp_deploy import environment  # noqa: E402
from smlp_deploy.export import Int8Options, export_model  # noqa: E402
from smlp_deploy.fileio import write_json_atomic  # noqa: E402
from smlp_deploy.samples import sample_images  # noqa: E402

FSYNC = os.fsync


class Flushes:
    """``os.fsync`` as the export calls it: timed (``on``), or a no-op (``off``, the baseline)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def timed(self, fd: int) -> None:
        start = time.perf_counter()
        FSYNC(fd)
        self.seconds += time.perf_counter() - start
        self.calls += 1


def run_once(export: Callable[[Path], None], where: Path, flush: bool) -> tuple[float, Flushes, int]:
    """One export into a new folder: its seconds, its flushes and the bytes it wrote."""
    flushes = Flushes()
    os.fsync = flushes.timed if flush else (lambda fd: None)
    out = Path(tempfile.mkdtemp(dir=where)) / "export"
    try:
        start = time.perf_counter()
        export(out)
        seconds = time.perf_counter() - start
        written = sum(p.stat().st_size for p in out.iterdir())
    finally:
        os.fsync = FSYNC
        shutil.rmtree(out.parent)
    return seconds, flushes, written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="test")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--int8", action="store_true", help="calibrated on the bundled photos")
    p.add_argument("--engines", action="store_true", help="also the engines of every flavour that builds here")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--where", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    precisions = ("fp32",) + ("fp16",) * args.fp16 + ("int8",) * args.int8
    calib = sample_images()[0].parent
    int8 = Int8Options(calib, samples=len(sample_images())) if args.int8 else None

    def export(out: Path) -> None:
        export_model(args.variant, image_size=args.image_size, precisions=precisions, out_dir=out,
                     int8_options=int8, flavours=None if args.engines else (), quiet=True)

    run_once(export, args.where, flush=True)  # warm-up: imports, first-run caches
    seconds: dict[str, list[float]] = {"fsync": [], "no fsync": []}
    inside, calls, written = [], [], 0
    for r in range(args.rounds):
        for flush in (True, False) if r % 2 == 0 else (False, True):
            took, flushes, written = run_once(export, args.where, flush)
            seconds["fsync" if flush else "no fsync"].append(took)
            if flush:
                inside.append(flushes.seconds)
                calls.append(flushes.calls)
        print(f"round {r + 1}: fsync {seconds['fsync'][-1]:.2f} s ({inside[-1]:.3f} s in {calls[-1]} fsync calls), "
              f"no fsync {seconds['no fsync'][-1]:.2f} s", flush=True)
    ratios = [a / b for a, b in zip(seconds["fsync"], seconds["no fsync"], strict=True)]
    ratio = statistics.median(seconds["fsync"]) / statistics.median(seconds["no fsync"])
    print(f"{args.variant} {'+'.join(precisions)}{' + engines' if args.engines else ''}, {written / 2**20:.1f} MiB "
          f"written: median {statistics.median(seconds['fsync']):.2f} s with fsync, "
          f"{statistics.median(seconds['no fsync']):.2f} s without: ratio {ratio:.3f} (rounds {min(ratios):.3f} to "
          f"{max(ratios):.3f}); {statistics.median(inside):.3f} s inside fsync (median)")
    if args.json:
        write_json_atomic(args.json, {
            "env": environment.capture() | {"load_average": os.getloadavg()}, "command": " ".join(sys.argv),
            "variant": args.variant, "image_size": args.image_size, "precisions": precisions,
            "engines": args.engines, "bytes_written": written, "seconds": seconds, "ratios": ratios,
            "median_ratio": ratio, "seconds_inside_fsync": inside, "fsync_calls": calls,
        })


if __name__ == "__main__":
    main()
