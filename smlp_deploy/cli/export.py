"""smlp-export: sMLPNet -> verified ONNX (FP32, FP16) and TensorRT engines, with manifest.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import BatchProfile, BuildOptions, build_from_onnx, export_model
from ..export.onnx_graph import DEFAULT_OPSET
from ..models import ALIASES, VARIANTS
from .common import run_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smlp-export",
        description="Export sMLPNet to ONNX and TensorRT, checking every artifact against PyTorch. Without "
        "TensorRT or a GPU the ONNX artifacts are still made and verified, and the commands to build the "
        "engines on a GPU host are printed.",
    )
    p.add_argument("--variant", default="tiny", choices=sorted(VARIANTS) + sorted(ALIASES), help="model (default: tiny)")
    p.add_argument("--checkpoint", type=Path, help="authors' .pth or a state dict; random weights if omitted")
    p.add_argument("--image-size", type=int, default=224, help="square input side, a multiple of 32 (default: 224)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default: 1000)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 17 (default: {DEFAULT_OPSET})")
    p.add_argument("--out", type=Path, help="output directory (default: exports/<model name>/)")
    p.add_argument("--fp32", action="store_true", help="FP32 artifacts (the default when no precision is given)")
    p.add_argument("--fp16", action="store_true", help="mixed-precision FP16 artifacts (float32 I/O)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--batch", default="1:8:32", type=BatchProfile.parse, metavar="MIN:OPT:MAX",
                   help="engine batch profile (default: 1:8:32)")
    p.add_argument("--workspace", type=int, default=4096, metavar="MIB", help="TensorRT workspace limit (default: 4096)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6), help="TensorRT builder optimization level")
    p.add_argument("--timing-cache", type=Path, help="TensorRT timing cache, reused across builds "
                   "(default: timing.cache in the output directory)")
    p.add_argument("--require-engine", action="store_true", help="fail if no TensorRT engine can be built here")
    p.add_argument("--from-onnx", type=Path, metavar="EXPORT_DIR",
                   help="build and verify engines for an earlier export's ONNX files (on a GPU host)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and random verification inputs")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    build = BuildOptions(args.batch, args.workspace, args.opt_level, args.timing_cache)
    if args.from_onnx:
        result = build_from_onnx(args.from_onnx, build, quiet=args.quiet)
    else:
        precisions = tuple(p for p in ("fp32", "fp16") if getattr(args, p)) or ("fp32",)
        result = export_model(
            args.variant, precisions=precisions, out_dir=args.out, checkpoint=args.checkpoint,
            image_size=args.image_size, num_classes=args.num_classes, opset=args.opset,
            do_simplify=not args.no_simplify, build=build, require_engine=args.require_engine, seed=args.seed,
            quiet=args.quiet,
        )
    print(result.summary())
    print(f"\nmanifest: {result.manifest_path}")
    return 0


entry_point = run_main(main)
