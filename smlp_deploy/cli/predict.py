"""smlp-predict: classify images or folders with any exported artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from ..imagefolder import find_images
from ..progress import format_table
from ..runtime.classifier import Classifier
from .common import run_main

FLAGS = {"backend": "--backend", "device": "--device", "max_batch_size": "--batch-size"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-predict", description="Classify images with an engine, ONNX file or checkpoint.")
    p.add_argument("artifact", type=Path, help="engine (.plan/.engine), ONNX model (.onnx) or checkpoint (.pt/.pth)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--topk", type=int, default=5, help="classes to report per image (default: 5)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the engine's max, else 32)")
    p.add_argument("--backend", choices=["tensorrt", "onnxruntime", "torch"], help="override the backend")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    return p


def expand(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files += find_images(path)
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"image {str(path)!r} does not exist")
    return files


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    files = expand(args.images)
    classifier = Classifier(args.artifact, backend=args.backend, device=args.device, max_batch_size=args.batch_size)
    step = classifier.max_batch_size
    rows = []
    with tqdm(total=len(files), unit="img", disable=len(files) <= step or not sys.stderr.isatty()) as bar:
        for start in range(0, len(files), step):
            chunk = files[start : start + step]
            for path, pred in zip(chunk, classifier.predict([str(p) for p in chunk], topk=args.topk)):
                if args.json:
                    print(json.dumps({"image": str(path), **pred.to_dict()}))
                else:
                    rows.append([path, pred.label, f"{pred.score:.3f}", ", ".join(lab for _, lab, _ in pred.topk[1:])])
            bar.update(len(chunk))
    if not args.json:
        print(format_table(["image", "top-1", "score", f"next {args.topk - 1}"], rows))
        print(f"\n{len(files)} image(s) with {classifier.describe()}")
    return 0


entry_point = run_main(main, FLAGS)
