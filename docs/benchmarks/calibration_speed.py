"""INT8 (and FP8) calibration time against plain FP32 inference over the same images, and the peak memory of
``smlp-export --int8`` (the figures behind README, "INT8": calibration time, and "FP8").

    python docs/benchmarks/calibration_speed.py --variant tiny --samples 256 --rounds 2 \
        --rss-samples 256,1024 --json docs/benchmarks/calibration-speed-tiny.json

With ``--as-before``, each round also times percentile and entropy as calibration ran before its statistics used
every core (binned on one thread, ONNX Runtime's threads spinning after each run). With ``--fp8``, each round also
times FP8's calibration (each FP8 method on the tensors the FP8 form quantizes), and every task is also compared
with INT8's default calibration in the same round.

The images are the digits fixture's train split (1,347 PNGs, tests/digits.py) unless ``--calib-dir`` names a
folder; the model has random weights (seed 0), as ``smlp-export`` without a checkpoint. Each round times, in an
order that rotates from round to round:

* FP32 inference: decode + preprocess + ONNX Runtime (the shipped session options, CPU) over the images, 8 a
  batch;
* the calibration forward alone: the same images through the session calibration uses (the tensors the
  TensorRT form quantizes added as outputs), in the batches it uses, no statistics;
* each method's whole calibration, ``compute_ranges``, session start-up included.

Ratios are taken within a round and quoted as the median and range over the rounds. Peak RSS is that of a
whole ``smlp-export --variant <v> --int8`` (default method and target), one process per sample count, measured
with ``/usr/bin/time -f "%e s %M KB"``.

With ``--statistics-against DIR`` (a checkout of another commit, e.g. ``git archive REV smlp_deploy | tar -x -C
DIR``), each round also times the statistics alone, in ns a value: the activations of ``--statistics-images``
images (one a batch) are recorded once, then fed to each histogram method's statistics of this tree and of DIR's
``smlp_deploy``, in turn; the memory the statistics hold at the end (counts and kept values) is reported too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.digits writes the fixture's images

from smlp_deploy import environment  # noqa: E402
from smlp_deploy.calibration import METHODS, calibrated_tensors, compute_ranges, load_calibration_set  # noqa: E402
from smlp_deploy.calibration.forward import Activations  # noqa: E402
from smlp_deploy.calibration.fp8 import METHODS as FP8_METHODS  # noqa: E402
from smlp_deploy.calibration.fp8 import fp8_calibrated_tensors  # noqa: E402
from smlp_deploy.calibration.methods import DEFAULT_METHOD, batch_size_for  # noqa: E402
from smlp_deploy.export import export_model  # noqa: E402
from smlp_deploy.fileio import write_json_atomic  # noqa: E402
from smlp_deploy.progress import format_table  # noqa: E402
from smlp_deploy.runtime.backends import OnnxRuntimeBackend  # noqa: E402

FP32 = "FP32 inference"
FORWARD = "calibration forward only"
FP32_BATCH = 8  # the export's default optimization batch


def batches(images, size: int, first: int | None = None):
    """Stacked batches of ``size`` (after one of ``first``, as calibration runs them)."""
    if first:
        yield np.stack(list(islice(images, first)))
    while batch := list(islice(images, size)):
        yield np.stack(batch)


def timed_tasks(model: Path, calib, tensors: list[str], fp8_tensors: list[str] | None = None,
                as_before: bool = False):
    """The tasks a round times, by name, and the calibration batch size; with ``fp8_tensors``, FP8's methods on
    them too; with ``as_before``, percentile and entropy as calibration ran before its statistics used every core."""
    fp32 = OnnxRuntimeBackend(model, device="cpu")
    observed = Activations(model, tensors)
    one = observed(next(batches(calib.images(), 1)))
    calib_batch = batch_size_for(sum(v.nbytes for v in one.values()))
    del one

    def infer():
        for batch in batches(calib.images(), FP32_BATCH):
            fp32.run(batch)

    def forward():
        for batch in batches(calib.images(), calib_batch, first=1):
            observed(batch)

    tasks = {FP32: infer, FORWARD: forward}
    tasks |= {name: (lambda m=m: compute_ranges(model, calib, m, tensors, quiet=True)) for name, m in METHODS.items()}
    tasks |= {f"FP8 {name}": (lambda m=METHODS[name]: compute_ranges(model, calib, m, fp8_tensors, quiet=True))
              for name in (FP8_METHODS if fp8_tensors else ())}
    if as_before:
        tasks |= {f"{name}, as before": partial(run_as_before, tasks[name]) for name in ("percentile", "entropy")}
    return tasks, calib_batch


def run_as_before(task) -> None:
    """``task`` as calibration ran before its statistics were spread over the cores: binned on one thread, with ONNX
    Runtime's threads spinning after each run."""
    import smlp_deploy.calibration.forward as forward
    import smlp_deploy.calibration.methods as methods

    cores, spinning = methods.cpu_cores, forward.ALLOW_SPINNING
    methods.cpu_cores, forward.ALLOW_SPINNING = (lambda: 1), "1"
    try:
        task()
    finally:
        methods.cpu_cores, forward.ALLOW_SPINNING = cores, spinning


def time_rounds(tasks: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each task per round, the order rotating from round to round."""
    times: dict[str, list[float]] = {name: [] for name in tasks}
    names = list(tasks)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            tasks[name]()
            times[name].append(time.perf_counter() - start)
            print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    return times


def other_methods(tree: Path) -> dict:
    """The METHODS of the ``smlp_deploy`` in ``tree``, imported as another package beside this one."""
    import importlib
    import shutil

    copy = Path(tempfile.mkdtemp(prefix="smlp-other-"))
    shutil.copytree(tree / "smlp_deploy", copy / "smlp_deploy_other")
    sys.path.insert(0, str(copy))
    return importlib.import_module("smlp_deploy_other.calibration.methods").METHODS


def time_statistics(model: Path, calib, tensors: list[str], images: int, others: dict, rounds: int) -> dict:
    """ns a value of each histogram method's statistics, this tree's and the other's in turn, over the recorded
    activations of ``images`` images, per round; and the bytes they hold at the end."""
    from smlp_deploy.calibration.collector import Scratch

    observed = Activations(model, tensors)
    recorded = [observed(batch) for batch in islice(batches(calib.images(), 1), images)]
    del observed
    values = sum(v.size for batch in recorded for v in batch.values())
    sides = {f"{name} ({side})": methods[name] for name in ("percentile", "entropy")
             for side, methods in (("this tree", METHODS), ("other", others))}
    result: dict = {"values": values, "ns_per_value": {label: [] for label in sides}, "bytes": {}}
    for r in range(rounds):
        for label in list(sides)[r % len(sides):] + list(sides)[: r % len(sides)]:
            scratch = Scratch()
            stats = {name: sides[label].statistics(scratch) for name in tensors}
            start = time.perf_counter()
            for batch in recorded:
                for name in tensors:
                    stats[name].add(name, batch[name])
            result["ns_per_value"][label].append((time.perf_counter() - start) / values * 1e9)
            result["bytes"][label] = sum(s.counts.nbytes + (s.kept().nbytes if hasattr(s, "kept") else 0)
                                         for s in stats.values())
            print(f"round {r + 1}: statistics, {label} {result['ns_per_value'][label][-1]:.2f} ns a value",
                  file=sys.stderr, flush=True)
    return result


def export_rss(variant: str, calib_dir: Path, samples: int, out: Path) -> dict:
    """Wall time and peak RSS of one ``smlp-export --int8`` process."""
    command = ["/usr/bin/time", "-f", "%e s %M KB", str(Path(sys.executable).parent / "smlp-export"),
               "--variant", variant, "--int8", "--calib-dir", str(calib_dir), "--calib-samples", str(samples),
               "--out", str(out), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall, _, kb, _ = done.stderr.strip().splitlines()[-1].split()
    return {"samples": samples, "wall_s": float(wall), "peak_rss_kb": int(kb), "command": " ".join(command[3:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="tiny")
    p.add_argument("--samples", type=int, default=256, help="calibration images timed")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calib-dir", type=Path, help="default: the digits fixture's train split, written to a temp dir")
    p.add_argument("--rss-samples", default="256,1024", help="sample counts of the smlp-export peak-RSS runs "
                   "('' for none)")
    p.add_argument("--fp8", action="store_true", help="time FP8's calibration too, against INT8's default")
    p.add_argument("--statistics-against", type=Path, metavar="DIR",
                   help="time the histograms alone, this tree's against those of the smlp_deploy in DIR")
    p.add_argument("--statistics-images", type=int, default=4, help="images whose activations they are fed")
    p.add_argument("--as-before", action="store_true", help="also time percentile and entropy as calibration ran "
                   "before its statistics used every core (one thread, ONNX Runtime's threads spinning)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="smlp-calib-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.calib_dir is None:
            from tests.digits import write_digits

            args.calib_dir = write_digits(tmp / "digits")["train"]
        export = export_model(args.variant, out_dir=tmp / "export", quiet=True)
        model = export.out_dir / "model.onnx"
        calib = load_calibration_set(args.calib_dir, export.manifest.preprocess, samples=args.samples, quiet=True)
        tensors = calibrated_tensors(onnx.load(str(model)), ["tensorrt"])
        fp8_tensors = fp8_calibrated_tensors(onnx.load(str(model))) if args.fp8 else None
        tasks, calib_batch = timed_tasks(model, calib, tensors, fp8_tensors, as_before=args.as_before)
        times = time_rounds(tasks, args.rounds)
        del tasks  # their sessions go before the export processes start
        statistics = (time_statistics(model, calib, tensors, args.statistics_images,
                                      other_methods(args.statistics_against), args.rounds)
                      if args.statistics_against else None)
        rss = [export_rss(args.variant, args.calib_dir, int(n), tmp / f"rss-{n}")
               for n in args.rss_samples.split(",") if n]

    ratios = {name: [t / f for t, f in zip(times[name], times[FP32], strict=True)] for name in times}
    vs_int8 = ({name: [t / i for t, i in zip(times[name], times[DEFAULT_METHOD], strict=True)] for name in times}
               if args.fp8 else {})

    def spread(r: list[float]) -> str:
        return f"{np.median(r):.2f}x [{min(r):.2f}-{max(r):.2f}]"

    rows = [[name, f"{np.median(times[name]):.1f}", f"{args.samples / np.median(times[name]):.1f}",
             spread(ratios[name]), *([spread(vs_int8[name])] if args.fp8 else [])] for name in times]
    print(format_table(["task", "median s", "img/s", "vs FP32 inference",
                        *([f"vs INT8 {DEFAULT_METHOD}"] if args.fp8 else [])], rows))
    print(f"({args.samples} images, {len(tensors)} tensors observed" + (f" ({len(fp8_tensors)} for FP8)" if args.fp8
                                                                        else "")
          + f", calibration batches of {calib_batch}, FP32 batches of {FP32_BATCH}; {args.rounds} interleaved "
          "rounds, ratios median [min-max])")
    if statistics:
        print(format_table(["statistics alone", "ns a value", "MiB held"],
                           [[label, f"{np.median(ns):.2f} [{min(ns):.2f}-{max(ns):.2f}]",
                             f"{statistics['bytes'][label] / 2**20:.1f}"]
                            for label, ns in statistics["ns_per_value"].items()]))
        print(f"({statistics['values'] / 1e6:.0f} M values of {args.statistics_images} images; ns median [min-max] "
              f"over the rounds; the other tree: {args.statistics_against})")
    for r in rss:
        print(f"smlp-export --int8, {r['samples']} images: {r['wall_s']:.1f} s, "
              f"peak RSS {r['peak_rss_kb'] / 2**20:.2f} GiB")
    if args.json:
        write_json_atomic(args.json, {
            "env": environment.capture() | {"threads": environment.cpu_cores()}, "model": export.manifest.model.name,
            "samples": args.samples, "tensors": len(tensors), "calibration_batch": calib_batch,
            "fp32_batch": FP32_BATCH, "seconds": times, "vs_fp32": ratios, "export_rss": rss,
            **({"fp8_tensors": len(fp8_tensors), f"vs_int8_{DEFAULT_METHOD}": vs_int8} if args.fp8 else {}),
            **({"statistics": statistics | {"other": str(args.statistics_against)}} if statistics else {}),
        })


if __name__ == "__main__":
    main()
