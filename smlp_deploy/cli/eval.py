"""smlp-eval: top-1/top-5 of exported artifacts on a labeled image folder (one subfolder per class)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..evaluation import class_indices, evaluate
from ..imagefolder import LabeledFolder
from ..manifest import IMAGENET_LABELS
from ..preprocess_config import PreprocessConfig
from ..progress import format_table
from ..runtime.backends.registry import BACKENDS, PRECISION_CHOICES
from ..runtime.classifier import Classifier
from .common import positive_int, run_main
from .requires import require_backend

FLAGS = {"data": "--data", "device": "--device", "backend": "--backend", "sorted_order": "--sorted-classes",
         "allow_unlisted": "--allow-unlisted", "precision": "--precision"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-eval", description=__doc__)
    p.add_argument("artifacts", nargs="+", type=Path,
                   help="engines (.plan, .rtx.plan), ONNX models (.onnx) or checkpoints (.pt/.pth), each with its "
                   "manifest")
    p.add_argument("--data", type=Path, required=True,
                   help="labeled folder: DIR/<class>/<image>, each class folder named by the class's index, label "
                   "or (ImageNet) WordNet id")
    p.add_argument("--sorted-classes", action="store_true",
                   help="map the class folders in sorted order to outputs 0, 1, ... (models trained that way)")
    p.add_argument("--allow-unlisted", action="store_true",
                   help="load artifacts their export's manifest does not list (unverified)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default: 32)")
    p.add_argument("--backend", choices=list(BACKENDS), help="run every artifact with this backend (default: each "
                   "file's own)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="what a backend that offers several computes in: "
                   "openvino fp32 (its default) or bf16, on CPUs with bf16 instructions")
    p.add_argument("--threads", type=positive_int, help="CPU threads for ONNX Runtime and OpenVINO (default: all "
                   "cores)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    require_backend("backend", args.backend)
    folder = LabeledFolder.scan(args.data)
    classifiers = [Classifier(path, backend=args.backend, device=args.device, threads=args.threads,
                              allow_unlisted=args.allow_unlisted, precision=args.precision)
                   for path in args.artifacts]
    rows = []
    # Artifacts that share preprocessing share one decoding pass.
    groups: dict[PreprocessConfig, list[Classifier]] = {}
    for classifier in classifiers:
        groups.setdefault(classifier.preprocess.config, []).append(classifier)
    scores = {}
    for group in groups.values():
        first = group[0]
        if first.manifest:
            labels = first.manifest.labels
        else:
            labels = IMAGENET_LABELS if len(first.labels) == 1000 else first.labels
        indices = class_indices(folder.classes, labels, len(first.labels), sorted_order=args.sorted_classes)
        models = {str(c.path): c.logits for c in group}
        scores.update(evaluate(models, folder, first.preprocess, indices, batch_size=args.batch_size,
                               quiet=args.quiet))
    for classifier in classifiers:
        accuracy = scores[str(classifier.path)]
        rows.append({"artifact": str(classifier.path), "backend": classifier.describe(), "top1": accuracy.top1,
                     "top5": accuracy.top5, "n_images": accuracy.n_images})
        classifier.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(["artifact", "backend", "top-1", "top-5", "images"],
                           [[r["artifact"], r["backend"], f"{r['top1']:.2%}", f"{r['top5']:.2%}", r["n_images"]]
                            for r in rows]))
    return 0


entry_point = run_main(main, FLAGS)
