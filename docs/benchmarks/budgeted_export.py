"""The budgeted export (``smlp-export --int8 --max-top1-drop 0.5``) on the outlier fixture, for every k and channel
choice asked: what each remedy reached, the artifacts' parity, the search's cost.

The fixture (tests/outliers.py): the digits model (``smlp_deploy/samples/smlpnet_digits.pth``, 64 px) with 2
channels per channel MLP rescaled by ``k`` (LayerNorm's affine times k, fc1's input column over k: FP32 unchanged),
channels drawn by ``--seeds``. Each case is one ``export_model`` call, as ``smlp-export`` makes it: both INT8 forms
(and FP8 with ``--fp8``), 256 calibration images of the train split, the budget judged on the 450 held-out images
(``eval_dir``), no engines (``--targets tensorrt``: the TensorRT form alone). ``--int8-floor`` sets the INT8 parity
gate's cosine floor for the run (the export's own is ``export.parity.THRESHOLDS``), to see what a stricter gate asks
of the remedies. Each case runs in a fresh process: ``seconds`` is the whole export, ``peak_mib`` the process's peak
resident memory::

    .venv/bin/python docs/benchmarks/budgeted_export.py --k 100 150 250 1000 --seeds 0 1 2 --fp8 \\
        --json docs/benchmarks/budgeted-export-digits.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BUDGET_POINTS = 0.5


def peak_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def case(root: Path, k: float, seed: int, fp8: bool, floor: float | None, targets: tuple[str, ...]) -> dict:
    """One budgeted export of the fixture for ``k`` and channel seed ``seed``, in this process."""
    from smlp_deploy import AccuracyBudget
    from smlp_deploy.errors import SmlpDeployError
    from smlp_deploy.export import Fp8Options, Int8Options, export_model
    from smlp_deploy.export.parity import THRESHOLDS, Thresholds
    from smlp_deploy.models import create_model
    from smlp_deploy.records import to_json
    from tests.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES
    from tests.outliers import choose_channels, save_checkpoint, with_outliers

    if floor is not None:
        THRESHOLDS["int8"] = Thresholds(min_cosine=floor)
    base = create_model("test", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, checkpoint=CHECKPOINT)
    model, outliers = with_outliers(base, k, choose_channels(base, seed=seed))
    checkpoint = save_checkpoint(model, root / f"k{k:g}-s{seed}.pth")
    precisions = ("fp32", "int8", "fp8") if fp8 else ("fp32", "int8")
    start = time.perf_counter()
    row: dict = {"k": k, "channel_seed": seed, "channels": {n: list(c) for n, c in outliers.channels.items()},
                 "int8_floor": THRESHOLDS["int8"].min_cosine}
    try:
        result = export_model("test", checkpoint=checkpoint, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                              precisions=precisions, out_dir=root / f"export-k{k:g}-s{seed}", flavours=(),
                              int8_options=Int8Options(root / "digits" / "train", targets=targets),
                              fp8_options=Fp8Options(root / "digits" / "train") if fp8 else None,
                              eval_dir=root / "digits" / "test", budget=AccuracyBudget(max_top1_drop=BUDGET_POINTS),
                              quiet=True)
    except SmlpDeployError as exc:
        return {**row, "error": type(exc).__name__, "message": str(exc), "seconds": time.perf_counter() - start,
                "peak_mib": peak_mib()}
    manifest = result.manifest
    return {**row, "seconds": round(time.perf_counter() - start, 2), "peak_mib": round(peak_mib(), 1),
            "budget": to_json(manifest.accuracy_budget),
            "artifacts": {a.path: {"cosine": a.parity.cosine if a.parity else None,
                                   "top1": a.accuracy.top1 if a.accuracy else None} for a in manifest.artifacts}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=float, nargs="+", default=[100, 150, 250, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="channel choices")
    parser.add_argument("--fp8", action="store_true", help="FP8 too")
    parser.add_argument("--int8-floor", type=float, help="the INT8 parity gate's cosine floor for this run")
    parser.add_argument("--targets", nargs="+", default=["tensorrt", "cpu"], help="the INT8 forms exported")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--case", nargs=3, metavar=("ROOT", "K", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(Path(args.case[0]), float(args.case[1]), int(args.case[2]), args.fp8, args.int8_floor,
                              tuple(args.targets))))
        return
    from tests.digits import write_digits

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        write_digits(Path(tmp) / "digits")
        for k in args.k:
            for seed in args.seeds:
                command = [sys.executable, __file__, "--case", tmp, str(k), str(seed)]
                command += ["--fp8"] * args.fp8 + (["--int8-floor", str(args.int8_floor)] if args.int8_floor else [])
                command += ["--targets", *args.targets]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(summary(results[-1])), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def summary(row: dict) -> dict:
    """One line a person reads: per artifact, the metric after each remedy, float layers, cosine."""
    if "error" in row:
        return {key: row[key] for key in ("k", "channel_seed", "error", "message")}
    outcomes = {o["artifact"]: {"steps": [f"{s['remedy']} {s['value']:.2f}" for s in o["steps"]],
                                "float": len(o["float_layers"]), "cosine": round(row["artifacts"][o["artifact"]]
                                                                                  ["cosine"], 5)}
                for o in row["budget"]["outcomes"]}
    return {"k": row["k"], "seed": row["channel_seed"], "seconds": row["seconds"], "peak_mib": row["peak_mib"],
            "smoothed": len(row["budget"]["smoothing"]), **outcomes}


if __name__ == "__main__":
    main()
