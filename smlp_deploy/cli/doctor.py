"""smlp-doctor: what this machine can do with smlp-deploy, and for what it cannot, the install or the reason."""

from __future__ import annotations

import argparse
import json
import sys

from ..artifacts import runs_precision
from ..checkup import CAPABILITIES, DoctorReport, doctor
from ..environment import DISTRIBUTION
from ..records import to_json
from ..tensorrt.flavours import FLAVOURS
from ..version import __version__
from .common import run_main


def _keys(text: str) -> tuple[str, ...]:
    keys = tuple(k for k in text.split(",") if k)
    unknown = [k for k in keys if k not in CAPABILITIES]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(CAPABILITIES)}, got {text!r}")
    return keys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-doctor", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    p.add_argument("--require", type=_keys, default=(), metavar="CAPABILITY[,...]",
                   help=f"exit with status 1 unless these are ready: {', '.join(CAPABILITIES)}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = doctor()
    print(json.dumps(to_json(report), indent=1) if args.json else format_report(report))
    missing = [report.capability(key) for key in args.require if not report.capability(key).ready]
    for capability in missing:
        print(f"not ready: {capability.name} ({capability.key}): {capability.needs}", file=sys.stderr)
    return 1 if missing else 0


def format_report(report: DoctorReport) -> str:
    """The report as a person reads it."""
    gpus = [f"GPU {g.index}: {g.name}, compute capability {g.compute_capability}"
            + (" (FP8)" if g.compute_capability != "?" and runs_precision(g.compute_capability, "fp8") else "")
            + f", {g.memory_gib} GiB"
            + ("" if g.usable_by_torch else " (torch cannot use it)") for g in report.gpus]
    providers = ", ".join(report.onnxruntime_providers) or "none"
    machine = [
        ("smlp-deploy", report.smlp_deploy),
        ("python", f"{report.python} ({report.platform})"),
        ("torch", f"{report.torch or 'not installed'}" + (f", CUDA {report.torch_cuda}" if report.torch_cuda else
                                                           ", CPU build")),
        ("GPUs", "; ".join(gpus) or "none (nvidia-smi finds no NVIDIA GPU)"),
        ("driver", report.driver or "-"),
        *((FLAVOURS[t.flavour].title, (t.version or "not installed") + ("" if t.version is None else
                                                                           f", builder: {t.builder or 'ok'}"))
          for t in report.tensorrt),
        ("ONNX Runtime", (f"{report.onnxruntime_gpu or report.onnxruntime or 'not installed'}"
                          f"{' (onnxruntime-gpu)' if report.onnxruntime_gpu else ''}, providers: {providers}")),
        ("onnxsim", report.onnxsim or "not installed"),
    ]
    undeclared = f" (its libraries; {DISTRIBUTION} {__version__} declares no such extra)"
    extras = [(f"[{e.name}]", e.needs or "installed" + ("" if e.declared else undeclared))
              for e in report.extras]
    gpu = report.gpu_needs
    blocked = [c for c in report.capabilities if gpu and c.needs.startswith(gpu)]
    capabilities = [(c.name, "ready" if c.ready else f"no: {c.needs}") for c in report.capabilities if c not in blocked]
    without_gpu = [(c.name, "no" + (f"; also {rest}" if (rest := c.needs[len(gpu):].lstrip("; ")) else ""))
                   for c in blocked]
    cpu = report.cpu
    openvino = [("OpenVINO's view", f"{cpu.openvino}: {', '.join(cpu.openvino_capabilities)}")] if cpu.openvino else []
    cpu_lines = [("model", cpu.model), ("instructions", ", ".join(cpu.instructions) or "none known"), *openvino,
                 *((p.precision, f"{p.paths}: {p.instructions}" + (f" (no: {p.needs})" if p.needs else "")
                    if p.instructions else f"no: {p.needs}") for p in cpu.precisions)]
    width = max(len(k) for k, _ in machine + extras + capabilities + without_gpu + cpu_lines)
    lines = ["machine"] + [f"  {k:<{width}}  {v}" for k, v in machine]
    lines += ["CPU"] + [f"  {k:<{width}}  {v}" for k, v in cpu_lines]
    lines += ["extras"] + [f"  {k:<{width}}  {v}" for k, v in extras]
    lines += ["capabilities"] + [f"  {k:<{width}}  {v}" for k, v in capabilities]
    if blocked:  # the reason is said once, then what it blocks
        lines += [f"{gpu[0].upper()}{gpu[1:]}, so:"] + [f"  {k:<{width}}  {v}" for k, v in without_gpu]
    if report.cpu_only:
        builds = [FLAVOURS[t.flavour].title for t in report.tensorrt if t.builder is None]
        here = f"; {' and '.join(builds)} engines are built here" if builds else ""
        lines += ["", ("This machine is CPU-only: ONNX export, FP16, INT8 and FP8 ONNX, ONNX Runtime and the CPU "
                       f"benchmark work here{here}; running TensorRT engines and the GPU benchmark need an NVIDIA GPU "
                       "(there: make gpu-check).")]
    return "\n".join(lines)


entry_point = run_main(main)
