"""What each precision's parity measures on the models at hand: the figures behind the floors in
smlp_deploy/export/parity.py (docs/export.md, "Parity thresholds").

Exports, each in FP32, FP16, INT8 (both forms, with each calibration method) and FP8, checked against PyTorch on the
export's own verification inputs (the package's photographs, and random tensors for all but INT8):

* ``test`` at 64 px and ``tiny`` (sMLPNet-T) at 224 px with random weights, calibrated on the package's photos;
* the trained ``digits`` model (tests/digits.py), calibrated on 256 of its training images.

The export's own gate is switched off here (every threshold at its loosest), so that what is measured is printed
whatever it is. Per precision: the worst of each figure over every export and method.

    python docs/benchmarks/parity_floors.py --json docs/benchmarks/parity-floors.json
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from smlp_deploy.calibration.methods import METHODS
from smlp_deploy.environment import capture
from smlp_deploy.export import Fp8Options, Int8Options, export_model, parity
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.progress import format_table
from smlp_deploy.samples import sample_images


def exports(root: Path) -> dict[str, dict]:
    """The models: export_model's arguments for each, and its calibration folder."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent.parent))
    from tests.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, write_digits

    digits = write_digits(root / "digits")
    photos = sample_images()[0].parent
    return {
        "test, random": dict(variant="test", image_size=64, calib=photos, samples=len(sample_images())),
        "tiny, random": dict(variant="tiny", image_size=224, calib=photos, samples=len(sample_images())),
        "digits, trained": dict(variant="test", image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, checkpoint=CHECKPOINT,
                                labels=[str(i) for i in range(NUM_CLASSES)], calib=digits["train"], samples=256),
    }


def measure(root: Path) -> list[dict]:
    rows = []
    for name, spec in exports(root).items():
        calib, samples = spec.pop("calib"), spec.pop("samples")
        for method in METHODS:
            out = root / f"{name.split(',')[0]}-{method}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = export_model(**spec, precisions=("fp32", "fp16", "int8", "fp8"), out_dir=out, quiet=True,
                                      flavours=(), int8_options=Int8Options(calib, samples=samples, method=method,
                                                                            targets=("tensorrt", "cpu")),
                                      fp8_options=Fp8Options(calib, samples=samples))
            for artifact in result.manifest.artifacts:
                if artifact.parity is None or (artifact.precision != "int8" and method != next(iter(METHODS))):
                    continue  # FP32, FP16 and FP8 do not depend on the INT8 method: measured once
                p = artifact.parity
                rows.append({"model": name, "artifact": artifact.path, "precision": artifact.precision,
                             "int8_method": method if artifact.precision == "int8" else None,
                             "cosine": p.cosine, "rel_max_abs_diff": p.rel_max_abs_diff,
                             "top1_agreement": p.top1_agreement, "n_inputs": p.n_inputs})
            print(f"{name}, INT8 {method}: done", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        saved = dict(parity.THRESHOLDS)
        parity.THRESHOLDS.update({k: parity.Thresholds() for k in saved})  # measure, do not refuse
        try:
            rows = measure(Path(tmp))
        finally:
            parity.THRESHOLDS.update(saved)
    worst = {}
    for row in rows:
        w = worst.setdefault(row["precision"], {"cosine": 1.0, "rel_max_abs_diff": 0.0, "top1_agreement": 1.0})
        w["cosine"] = min(w["cosine"], row["cosine"])
        w["rel_max_abs_diff"] = max(w["rel_max_abs_diff"], row["rel_max_abs_diff"])
        w["top1_agreement"] = min(w["top1_agreement"], row["top1_agreement"])
    print(format_table(["model", "artifact", "INT8 method", "worst cosine", "max|diff|/scale", "top-1 agree"],
                       [[r["model"], r["artifact"], r["int8_method"] or "-", f"{r['cosine']:.6f}",
                         f"{r['rel_max_abs_diff']:.2e}", f"{r['top1_agreement']:.0%}"] for r in rows]))
    print()
    print(format_table(["precision", "worst cosine", "largest max|diff|/scale", "lowest top-1 agree"],
                       [[p, f"{w['cosine']:.6f}", f"{w['rel_max_abs_diff']:.2e}", f"{w['top1_agreement']:.0%}"]
                        for p, w in worst.items()]))
    if args.json:
        write_json_atomic(args.json, {"command": "python docs/benchmarks/parity_floors.py", "machine": capture(),
                                      "rows": rows, "worst": worst})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
