"""smlp-predict: classify images or folders with any exported artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..errors import ImageError, InputError
from ..imagefolder import find_images
from ..progress import format_table
from ..runtime.backends.factory import BACKENDS
from ..runtime.classifier import Classifier, Prediction
from .common import positive_int, run_main

FLAGS = {"backend": "--backend", "device": "--device", "max_batch_size": "--batch-size", "topk": "--topk",
         "allow_unlisted": "--allow-unlisted", "images": "IMAGES"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-predict", description="Classify images with an engine, ONNX file or "
                                "checkpoint. An image that cannot be read is reported on its own line and the "
                                "others are still classified; the exit status is 1 if any failed.")
    p.add_argument("artifact", type=Path, help="engine (.plan/.engine), ONNX model (.onnx) or checkpoint (.pt/.pth)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes to report per image (default: 5)")
    p.add_argument("--batch-size", type=positive_int, help="images per batch (default: the engine's max, else 32)")
    p.add_argument("--backend", choices=list(BACKENDS), help="override the backend")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--allow-unlisted", action="store_true",
                   help="load an artifact its export's manifest does not list (unverified)")
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
            raise InputError(f"image {str(path)!r} does not exist", parameter="images")
    return files


def classify(classifier: Classifier, files: list[Path], topk: int) -> Iterator[tuple[Path, Prediction | str]]:
    """Each file with its prediction, or with why it could not be read; a bad file never stops the others."""
    step = classifier.max_batch_size
    for start in range(0, len(files), step):
        chunk = files[start : start + step]
        try:
            yield from zip(chunk, classifier.predict([str(p) for p in chunk], topk=topk))
        except ImageError:  # rare: find the culprits one by one
            for path in chunk:
                try:
                    yield path, classifier.predict(str(path), topk=topk)
                except ImageError as exc:
                    yield path, str(exc)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    files = expand(args.images)
    classifier = Classifier(args.artifact, backend=args.backend, device=args.device, max_batch_size=args.batch_size,
                            allow_unlisted=args.allow_unlisted)
    rows, failed = [], 0
    show_bar = len(files) > classifier.max_batch_size and sys.stderr.isatty()
    with tqdm(total=len(files), unit="img", disable=not show_bar) as bar:
        for path, result in classify(classifier, files, args.topk):
            failed += isinstance(result, str)
            if args.json:
                record = {"error": result} if isinstance(result, str) else result.to_dict()
                print(json.dumps({"image": str(path), **record}), flush=True)
            elif isinstance(result, str):
                rows.append([path, "error", "-", result])
            else:
                others = ", ".join(label for _, label, _ in result.topk[1:])
                rows.append([path, result.label, f"{result.score:.3f}", others])
            bar.update()
    if not args.json:
        print(format_table(["image", "top-1", "score", f"next {args.topk - 1}"], rows))
        unread = f"; {failed} could not be read" if failed else ""
        print(f"\n{len(files)} image(s) with {classifier.describe()}{unread}")
    return 1 if failed else 0


entry_point = run_main(main, FLAGS)
