"""smlp-predict: classify images or folders with any exported artifact."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError, SmlpDeployError
from ..imagefolder import find_images, holds_no_images
from ..progress import format_table
from ..runtime.backends.registry import BACKENDS, PRECISION_CHOICES
from ..runtime.classifier import Classifier, Prediction
from .common import positive_int, run_main
from .noise import library_chatter_to_file
from .requires import require_backend, require_extra

FLAGS = {"backend": "--backend", "device": "--device", "max_batch_size": "--batch-size", "topk": "--topk",
         "allow_unlisted": "--allow-unlisted", "jpeg_draft": "--jpeg-draft", "images": "IMAGES",
         "batch_size": "--batch-size", "output": "--output", "resume": "--resume", "replicas": "--replicas",
         "gpus_per_replica": "--gpus-per-replica", "cpus_per_replica": "--cpus-per-replica", "address": "--address",
         "verbose": "--verbose", "precision": "--precision", "ray": "--ray"}
RAY_FLAGS = ("output", "resume", "replicas", "gpus_per_replica", "cpus_per_replica", "address", "verbose")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-predict", description="Classify images with an engine, ONNX file or "
                                "checkpoint. An image that cannot be read is reported on its own line and the "
                                "others are still classified; the exit status is 1 if any failed.")
    p.add_argument("artifact", type=Path, help="engine (.plan, .rtx.plan), ONNX model (.onnx) or checkpoint (.pt/.pth)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--topk", type=positive_int, default=5, help="classes to report per image (default: 5)")
    p.add_argument("--batch-size", type=positive_int, help="images per batch (default: the engine's max, else 32)")
    p.add_argument("--backend", choices=list(BACKENDS), help="override the backend")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="what a backend that offers several computes in: "
                   "openvino fp32 (its default) or bf16, on CPUs with bf16 instructions")
    p.add_argument("--allow-unlisted", action="store_true",
                   help="load an artifact its export's manifest does not list (unverified)")
    p.add_argument("--jpeg-draft", action="store_true",
                   help="decode large JPEGs at a reduced scale: faster, at pixels slightly off a full decode "
                   "(docs/runtime.md, Decoding)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    ray = p.add_argument_group("on Ray Data (pip install 'smlp-deploy[ray]')",
                               "Classify one folder or list file with model replicas on Ray; rows stream to --output.")
    ray.add_argument("--ray", action="store_true", help="run on Ray: IMAGES is one folder (recursive) or one text "
                     "file of image paths (one per line, relative to the file's folder)")
    ray.add_argument("--output", type=Path, help="results: .jsonl (one file) or .parquet (a folder of part files); "
                     "rows hold path, topk, labels, scores, error")
    ray.add_argument("--resume", action="store_true", help="add only the images an existing --output lacks")
    ray.add_argument("--replicas", type=positive_int, help="model replicas, one per actor (default: 1); on GPUs "
                     "use one per GPU")
    ray.add_argument("--gpus-per-replica", type=float, help="default: 1 where the cluster has GPUs, else 0")
    ray.add_argument("--cpus-per-replica", type=float,
                     help="default: the cluster's CPUs less one, shared by the replicas, at most 1 each")
    ray.add_argument("--address", help="an existing Ray cluster (auto, host:port); default: a local Ray for this "
                     "run, on 127.0.0.1")
    ray.add_argument("--verbose", action="store_true", help="show Ray's own messages (its start-up notices, its "
                     "C++ core's log lines); by default they go to a log file, named only if the run fails")
    return p


def expand(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files the arguments name (folders searched), and each argument that names none, with why."""
    files, unusable = [], []
    for path in paths:
        if path.is_dir():
            found = find_images(path)
            files += found
            if not found:
                unusable.append((path, holds_no_images(path)))
        elif path.exists():
            files.append(path)
        else:
            unusable.append((path, f"image {str(path)!r} does not exist"))
    return files, unusable


def classify(classifier: Classifier, files: list[Path], topk: int) -> Iterator[tuple[Path, Prediction | str]]:
    """Each file with its prediction, or with why it has none (unreadable, or non-finite scores); a bad file never
    stops the others."""
    step = classifier.max_batch_size
    for start in range(0, len(files), step):
        chunk = files[start : start + step]
        for path, result in zip(chunk, classifier.predict_each([str(p) for p in chunk], topk=topk), strict=True):
            yield path, str(result) if isinstance(result, SmlpDeployError) else result


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.ray:
        return run_on_ray(p, args)
    given = [FLAGS[name] for name in RAY_FLAGS if getattr(args, name) not in (None, False)]
    if given:
        p.error(f"{', '.join(given)}: only with --ray")
    require_backend("backend", args.backend)
    files, unusable = expand(args.images)
    if not files:
        raise InputError(f"no images to classify: {'; '.join(why for _, why in unusable)}", parameter="images")
    classifier = Classifier(args.artifact, backend=args.backend, device=args.device, max_batch_size=args.batch_size,
                            allow_unlisted=args.allow_unlisted, precision=args.precision, jpeg_draft=args.jpeg_draft)
    topk = min(args.topk, len(classifier.labels))
    if topk < args.topk:
        print(f"note: --topk {args.topk} is more than the model's {topk} classes: showing {topk}", file=sys.stderr)
    rows, failed, total = [], 0, len(unusable) + len(files)
    show_bar = len(files) > classifier.max_batch_size and sys.stderr.isatty()
    with tqdm(total=total, unit="img", disable=not show_bar) as bar:
        for path, result in itertools.chain(unusable, classify(classifier, files, topk)):
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
        print(format_table(["image", "top-1", "score", f"next {topk - 1}"], rows))
        unread = f"; {failed} could not be classified" if failed else ""
        print(f"\n{total} image(s) with {classifier.describe()}{unread}")
    return 1 if failed else 0


def run_on_ray(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.json or args.device:
        p.error(f"{'--json' if args.json else '--device'} does not apply with --ray (rows go to --output; replicas "
                "use the GPUs Ray gives them)")
    if len(args.images) != 1 or args.output is None:
        p.error("--ray takes one folder or list file and --output")
    if args.address is None:  # Ray reads this at import: the local instance then listens on 127.0.0.1 only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    require_extra("ray", "ray")
    if args.address is None:  # a cluster's workers have their own libraries
        require_backend("backend", args.backend)
    from ..batch.pipeline import predict_dataset

    with nullcontext() if args.verbose else library_chatter_to_file("ray"):
        summary = predict_dataset(args.images[0], args.artifact, output=args.output,
                                  batch_size=args.batch_size or 32, replicas=args.replicas or 1,
                                  gpus_per_replica=args.gpus_per_replica, cpus_per_replica=args.cpus_per_replica,
                                  topk=args.topk, address=args.address, resume=args.resume, backend=args.backend,
                                  precision=args.precision, allow_unlisted=args.allow_unlisted,
                                  jpeg_draft=args.jpeg_draft)
    print(format_table(["output", "images", "errors", "skipped (done before)", "seconds", "images/s", "Ray start-up s"],
                       [[summary.output, summary.images, summary.errors, summary.skipped, f"{summary.seconds:.1f}",
                         f"{summary.images_per_second:.1f}", f"{summary.startup_seconds:.1f}"]]))
    if summary.model:
        print(f"\n{summary.replicas} replica(s) of {summary.model}")
    return 1 if summary.errors else 0


entry_point = run_main(main, FLAGS)
