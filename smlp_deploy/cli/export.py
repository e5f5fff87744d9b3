"""smlp-export: sMLPNet -> verified ONNX (FP32, FP16, INT8, FP8) and TensorRT engines of both flavours, with
manifest.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..artifacts import PRECISIONS
from ..calibration.budget import DEFAULT_IMAGES, AccuracyBudget
from ..calibration.dataset import DEFAULT_SAMPLES
from ..calibration.fp8 import METHODS as FP8_METHODS
from ..calibration.methods import DEFAULT_METHOD, METHODS
from ..calibration.options import FP8_DEFAULT_METHOD, Fp8Options, Int8Options
from ..calibration.quantize import TARGETS
from ..export.engines import build_from_onnx, verify_engines
from ..export.onnx_graph import DEFAULT_OPSET
from ..export.pipeline import export_model
from ..manifest import BatchProfile
from ..models.variants import ALIASES, VARIANTS
from ..tensorrt.builder import BuildOptions
from ..tensorrt.flavours import FLAVOURS, TENSORRT_RTX
from .common import positive_int, run_main
from .export_summary import export_summary

# The API parameters named in errors, and the flags that set them here.
FLAGS = {
    "variant": "--variant", "checkpoint": "--checkpoint", "image_size": "--image-size", "num_classes": "--num-classes",
    "opset": "--opset", "calib_dir": "--calib-dir", "samples": "--calib-samples", "method": "--calib-method",
    "cache": "--calib-cache", "targets": "--int8-target", "eval_dir": "--eval-dir", "profile": "--batch",
    "require_engine": "--require-engine", "directory": "--from-onnx", "out_dir": "--out", "flavours": "--flavour",
    "compute_capabilities": "--compute-capability", "export_dir": "--verify-engines", "openvino": "--openvino",
    "max_top1_drop": "--max-top1-drop", "min_agreement": "--min-agreement", "holdout_dir": "--holdout-dir",
    "images": "--budget-images", "max_float_layers": "--max-float-layers",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smlp-export",
        description="Export sMLPNet to ONNX and TensorRT engines, checking every artifact against PyTorch. "
        "TensorRT for RTX builds its engines on any machine (no GPU needed); TensorRT builds on the GPU the engine "
        "is for. A flavour that cannot build here is skipped, and the commands that finish it are printed.",
    )
    model = p.add_argument_group("model", "the network exported, and the reference it is checked against")
    model.add_argument("--variant", default="tiny", choices=sorted(VARIANTS) + sorted(ALIASES),
                       help="model (default: tiny)")
    model.add_argument("--checkpoint", type=Path, help="authors' .pth or a state dict; random weights if omitted")
    model.add_argument("--image-size", type=int, default=224,
                       help="square input side, a multiple of 32 (default: 224)")
    model.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default: 1000)")
    model.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                       help=f"ONNX opset, >= 17 (default: {DEFAULT_OPSET})")
    model.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    model.add_argument("--seed", type=int, default=0, help="seed for random weights, random verification inputs "
                       "and the calibration sample (default: 0)")

    precisions = p.add_argument_group("precisions", "the artifacts written (FP32 when none is given)")
    precisions.add_argument("--fp32", action="store_true",
                            help="FP32 artifacts (the default when no precision is given)")
    precisions.add_argument("--fp16", action="store_true", help="mixed-precision FP16 artifacts (float32 I/O)")
    precisions.add_argument("--int8", action="store_true", help="INT8 Q/DQ model calibrated on --calib-dir (float "
                            "parts fp16 when --fp16 is also given: the usual fastest engine)")
    precisions.add_argument("--fp8", action="store_true", help="FP8 (E4M3) Q/DQ model calibrated on --calib-dir, for "
                            "GPUs of compute capability 8.9 and later (float parts fp16 when --fp16 is also given)")

    calibration = p.add_argument_group("calibration", "the images and method INT8 and FP8 are calibrated with")
    calibration.add_argument("--calib-dir", type=Path, metavar="DIR",
                             help="folder of calibration images (searched recursively)")
    calibration.add_argument("--calib-samples", type=positive_int, default=DEFAULT_SAMPLES, metavar="N",
                             help=f"calibration images drawn from --calib-dir (default: {DEFAULT_SAMPLES})")
    calibration.add_argument("--calib-method", choices=sorted(METHODS),
                             help=f"activation range method (default: {DEFAULT_METHOD} for INT8, "
                             f"{FP8_DEFAULT_METHOD} for FP8, which takes {' or '.join(FP8_METHODS)})")
    calibration.add_argument("--calib-cache", type=Path, metavar="PATH",
                             help="calibration cache, reused when model, preprocessing, images and method match "
                             f"(default: {Int8Options.cache_name} for INT8, {Fp8Options.cache_name} for FP8, in the "
                             "output directory)")
    calibration.add_argument("--int8-target", default="tensorrt", choices=sorted(TARGETS) + ["both"],
                             help="tensorrt: model.int8.onnx for TensorRT (default); cpu: model.int8.cpu.onnx, the "
                             "form for CPUs (OpenVINO runs it as fused int8 kernels; ONNX Runtime runs it too); both")

    verification = p.add_argument_group("verification", "beyond the parity with PyTorch every artifact is held to: "
                                        "accuracy, OpenVINO, an accuracy budget")
    verification.add_argument("--eval-dir", type=Path, metavar="DIR", help="labeled image folder (one subfolder per "
                              "class): add top-1/top-5 of every artifact")
    verification.add_argument("--openvino", action="store_true",
                              help="also run each ONNX file on OpenVINO in FP32 and, where the CPU has bf16 "
                              "instructions, bf16, and record its parity (bf16 held to the FP16 thresholds; the INT8 "
                              "CPU form against ONNX Runtime); needs the openvino extra")
    budget = verification.add_mutually_exclusive_group()
    budget.add_argument("--max-top1-drop", type=float, metavar="POINTS",
                        help="make --int8/--fp8 within an accuracy budget: at most POINTS of top-1 below FP32 on "
                        "--eval-dir, by smoothing activation outliers, then keeping the fewest layers in float; the "
                        "export fails, saying what it reached, where it cannot")
    budget.add_argument("--min-agreement", type=float, metavar="PCT",
                        help="the other budget: at least PCT%% of held-out images get FP32's top-1 (--holdout-dir)")
    verification.add_argument("--holdout-dir", type=Path, metavar="DIR",
                              help="unlabeled images --min-agreement is judged on, calibration images among them "
                              "left out (default: the images of --calib-dir that calibration did not draw)")
    verification.add_argument("--budget-images", type=positive_int, default=DEFAULT_IMAGES, metavar="N",
                              help="at most N images, drawn from --eval-dir or --holdout-dir, judge the budget "
                              f"(default: {DEFAULT_IMAGES})")
    verification.add_argument("--max-float-layers", type=int, metavar="N",
                              help="at most N layers kept in float to meet the budget (default: a tenth of the "
                              "quantized layers; 0: smoothing only)")

    engines = p.add_argument_group("engines", "TensorRT engines: how they are built, or those of an earlier export")
    engines.add_argument("--batch", default="1:8:32", type=BatchProfile.parse, metavar="MIN:OPT:MAX",
                         help="engine batch profile (default: 1:8:32)")
    engines.add_argument("--workspace", type=positive_int, default=4096, metavar="MIB",
                         help="TensorRT workspace limit (default: 4096)")
    engines.add_argument("--opt-level", type=int, default=3, choices=range(6),
                         help="TensorRT builder optimization level (default: 3)")
    engines.add_argument("--timing-cache", type=Path, help="TensorRT timing cache, reused across builds "
                         "(default: timing.cache in the output directory)")
    engines.add_argument("--flavour", type=_flavours, metavar="NAME[,NAME]",
                         help=f"TensorRT flavours to build engines with: {', '.join(FLAVOURS)}, or none (default: "
                         "every flavour that can build here; the others are skipped with the commands that finish "
                         "them)")
    engines.add_argument("--compute-capability", type=_names, metavar="CC[,CC]",
                         help=f"GPUs {TENSORRT_RTX.title} engines are built for, e.g. 8.6,8.9 (default: the "
                         f"library's own set, {', '.join(TENSORRT_RTX.runs_on)})")
    engines.add_argument("--require-engine", action="store_true",
                         help="fail if no TensorRT engine can be built here")
    engines.add_argument("--from-onnx", type=Path, metavar="EXPORT_DIR",
                         help="build the engines an earlier export planned (TensorRT on a GPU host; TensorRT for RTX "
                         "anywhere), verifying those this machine's GPU runs")
    engines.add_argument("--verify-engines", type=Path, metavar="EXPORT_DIR",
                         help="on a GPU: check the parity of every engine of an export that runs here, and record it")

    output = p.add_argument_group("output")
    output.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: exports/<model name>/, "
                        "and an export there is replaced whole, with a warning first)")
    output.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    for flag in ("int8", "fp8"):
        if getattr(args, flag) and not args.calib_dir:
            cli.error(f"--{flag} needs calibration images: --calib-dir DIR")
    budgeted = args.max_top1_drop is not None or args.min_agreement is not None
    if budgeted and not (args.int8 or args.fp8):
        cli.error("an accuracy budget (--max-top1-drop, --min-agreement) applies to --int8 and --fp8: add one")
    for flag in ("holdout_dir", "max_float_layers"):
        if getattr(args, flag) is not None and not budgeted:
            cli.error(f"{FLAGS[flag]} belongs to an accuracy budget: add --max-top1-drop or --min-agreement")
    build = BuildOptions(args.batch, args.workspace, args.opt_level, args.timing_cache,
                         compute_capabilities=args.compute_capability)
    if args.verify_engines:
        result = verify_engines(args.verify_engines, quiet=args.quiet)
    elif args.from_onnx:
        result = build_from_onnx(args.from_onnx, build, flavours=args.flavour, quiet=args.quiet)
    else:
        precisions = tuple(p for p in PRECISIONS if getattr(args, p)) or ("fp32",)
        int8 = fp8_options = None
        if args.int8:
            targets = tuple(TARGETS) if args.int8_target == "both" else (args.int8_target,)
            int8 = Int8Options(args.calib_dir, samples=args.calib_samples, method=args.calib_method or DEFAULT_METHOD,
                               cache=args.calib_cache, seed=args.seed, targets=targets)
        if args.fp8:
            fp8_options = Fp8Options(args.calib_dir, samples=args.calib_samples,
                                     method=args.calib_method or FP8_DEFAULT_METHOD, cache=args.calib_cache,
                                     seed=args.seed)
        result = export_model(
            args.variant, precisions=precisions, out_dir=args.out, checkpoint=args.checkpoint,
            image_size=args.image_size, num_classes=args.num_classes, opset=args.opset,
            do_simplify=not args.no_simplify, build=build, flavours=args.flavour, require_engine=args.require_engine,
            int8_options=int8, fp8_options=fp8_options, eval_dir=args.eval_dir,
            budget=AccuracyBudget(args.max_top1_drop, args.min_agreement, args.holdout_dir, args.budget_images,
                                  args.max_float_layers) if budgeted else None,
            openvino=args.openvino, seed=args.seed, quiet=args.quiet,
        )
    print(export_summary(result))
    print(f"\nmanifest: {result.manifest_path}")
    return 0


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list: ``tensorrt,tensorrt-rtx``, ``8.6,8.9``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _flavours(text: str) -> tuple[str, ...]:
    """``--flavour none`` builds no engine."""
    return () if text.strip() == "none" else _names(text)


entry_point = run_main(main, FLAGS)
