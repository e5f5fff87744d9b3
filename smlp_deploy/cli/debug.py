"""smlp-debug: look inside an export's reduced-precision artifacts. ``smlp-debug layers``: where an artifact's
error enters, module by module against PyTorch (cosine, relative error, the quantized inputs' range against the
calibrated one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imagefolder import find_images, holds_no_images
from ..manifest import MANIFEST_NAME, Manifest
from ..records import to_json
from ..runtime.preprocess import Preprocessor
from .common import positive_int, run_main
from .requires import require_extra

FLAGS = {"export_dir": "EXPORT_DIR", "artifact": "ARTIFACT", "images": "IMAGES", "plot": "--plot",
         "detail": "--detail"}
DEFAULT_IMAGES = 32


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-debug", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    layers = commands.add_parser(
        "layers", help="where an artifact's error against PyTorch enters, module by module",
        description="Run the export's PyTorch model and ARTIFACT (on ONNX Runtime, its intermediate tensors exposed "
        "without changing its own numbers) on IMAGES, and compare the output of each block (--detail layers: each "
        "layer): cosine and relative error against PyTorch, and for each quantized input its range on the images "
        "against the calibrated one (the share saturated, the share rounded to zero). Names the module where the "
        "error enters.")
    layers.add_argument("export_dir", type=Path, metavar="EXPORT_DIR", help="an export folder (smlp-export --out)")
    layers.add_argument("artifact", metavar="ARTIFACT",
                        help="a reduced-precision ONNX file of it: model.fp16.onnx, model.int8.onnx, "
                        "model.int8.cpu.onnx or model.fp8.onnx")
    layers.add_argument("images", nargs="+", type=Path, metavar="IMAGES",
                        help="image files or folders (searched recursively), like the ones the model will see")
    layers.add_argument("--samples", type=positive_int, default=DEFAULT_IMAGES, metavar="N",
                        help=f"at most N images, evenly spaced in sorted order (default: {DEFAULT_IMAGES})")
    layers.add_argument("--detail", choices=("blocks", "layers"), default="blocks",
                        help="blocks: each stage, block and the head; layers: every module whose output the "
                        "artifact computes (default: blocks)")
    layers.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    layers.add_argument("--plot", type=Path, metavar="PATH",
                        help="also draw relative error against depth (PNG, SVG or PDF; needs matplotlib: pip install "
                        "'smlp-deploy[bench]')")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plot:
        require_extra("plot", "bench")
    from ..diagnose.layers import layer_report  # torch and the exporter: after the arguments are known to be usable

    images = read_images(args.export_dir, args.images, args.samples)
    report = layer_report(args.export_dir, args.artifact, images, detail=args.detail)
    print(json.dumps(to_json(report), indent=2) if args.json else report.table())
    if args.plot:
        from ..diagnose.plot import plot_layer_report

        print(f"wrote {plot_layer_report(report, args.plot)}")
    return 0


def read_images(export_dir: Path, sources: list[Path], samples: int) -> np.ndarray:
    """At most ``samples`` images of ``sources`` (files, or folders searched recursively), evenly spaced in their
    sorted order (a labeled folder's classes all come), through the export's preprocessing."""
    if not (export_dir / MANIFEST_NAME).is_file():
        raise InputError(f"{export_dir} is not an export folder (no {MANIFEST_NAME}): export to it with smlp-export",
                         parameter="export_dir")
    files = [found for source in sources for found in (find_images(source) if source.is_dir() else [source])]
    if not files:
        raise InputError(f"{holds_no_images(sources[0])}: give images like the ones the model will see",
                         parameter="images")
    preprocess = Preprocessor(Manifest.load(export_dir / MANIFEST_NAME).preprocess)
    return preprocess.batch(files[:: max(1, len(files) // samples)][:samples])


entry_point = run_main(main, FLAGS)
