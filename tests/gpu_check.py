"""The GPU run behind ``make gpu-check`` (which installs the trt, gpu and bench extras first), on a GPU host:

1. ``smlp-doctor``: every GPU capability must be ready, or the run stops with what to install;
2. ``pytest -m "tensorrt or cuda"``: the tests that skip on machines without TensorRT and a GPU;
3. ``smlp-export`` of sMLPNet-T with FP32, FP16 and INT8 (both targets, calibrated on the bundled photos), and
   FP8 where the GPU has it (compute capability 8.9 and later), building and verifying every engine of the
   TensorRT flavour for this GPU (TensorRT for RTX on compute capability 8.0/8.6/8.9/12.x, TensorRT on 9.0/10.0
   and others), batch profile 1:32:128;
4. ``smlp-bench``: that flavour's engines fp32/fp16/int8 (and fp8 where the GPU has FP8), ONNX Runtime CUDA, eager
   fp32/fp16 and torch.compile at batch 1/8/32/128, written to ``docs/benchmarks/<gpu-name>.{json,csv,png}``;
5. a short summary to paste into an issue, printed and written to ``exports/gpu-check/summary.md``.

A failing step is reported in the summary and the run goes on where it can; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from smlp_deploy.artifacts import runs_precision
from smlp_deploy.bench.results import BenchReport
from smlp_deploy.checkup import DoctorReport, doctor
from smlp_deploy.cli.doctor import format_report
from smlp_deploy.environment import gpu_slug
from smlp_deploy.manifest import MANIFEST_NAME, Manifest
from smlp_deploy.records import from_json, to_json
from smlp_deploy.samples import sample_images
from smlp_deploy.tensorrt.flavours import Flavour, flavour_for_compute_capability

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
GPU_CAPABILITIES = ("build-engines", "calibrate-gpu", "bench-gpu")  # and run-engines-<the flavour for this GPU>


@dataclass
class Step:
    name: str
    command: list[str]
    log: Path
    returncode: int | None = None
    seconds: float = 0.0
    last_line: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def run(self) -> Step:
        """Run the command, its output both on the terminal and in ``log``."""
        print(f"\n== {self.name}: {' '.join(self.command)}", flush=True)
        start = time.perf_counter()
        with self.log.open("w") as log, subprocess.Popen(self.command, cwd=ROOT, stdout=subprocess.PIPE,
                                                         stderr=subprocess.STDOUT, text=True) as process:
            for line in process.stdout or ():
                print(line, end="", flush=True)
                log.write(line)
                self.last_line = line.strip() or self.last_line
        self.returncode, self.seconds = process.returncode, time.perf_counter() - start
        return self


def pytest_command() -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "tensorrt or cuda"]


def export_command(export_dir: Path, flavour: Flavour, capability: str) -> list[str]:
    """sMLPNet-T in every precision this GPU (compute ``capability``) runs, INT8 and FP8 calibrated on the bundled
    photos, every engine of ``flavour`` built and verified on it; the batch profile reaches 128 for the benchmark."""
    photos = sample_images()
    return [str(BIN / "smlp-export"), "--variant", "tiny", "--fp32", "--fp16", "--int8", "--int8-target", "both",
            *(["--fp8"] if runs_precision(capability, "fp8") else []),
            "--calib-dir", str(photos[0].parent), "--calib-samples", str(len(photos)), "--batch", "1:32:128",
            "--flavour", flavour.name, "--require-engine", "--out", str(export_dir)]


def bench_command(export_dir: Path, outputs: dict[str, Path], flavour: Flavour, capability: str) -> list[str]:
    """The GPU matrix: ``flavour``'s engines and ONNX Runtime (CUDA) at fp32/fp16/int8, and fp8 where the GPU (of
    compute ``capability``) has FP8, eager and compiled PyTorch; smlp-bench adds eager fp16 and torch.compile as
    baselines on GPUs."""
    flags = {"json": "--json", "csv": "--csv", "png": "--plot"}
    precisions = "fp32,fp16,int8" + (",fp8" if runs_precision(capability, "fp8") else "")
    return [str(BIN / "smlp-bench"), "--artifacts", str(export_dir), "--device", "cuda",
            "--backends", f"torch,torch.compile,onnxruntime,{flavour.name}", "--precision", precisions,
            "--batch-sizes", "1,8,32,128", *(arg for kind, path in outputs.items() for arg in (flags[kind], str(path)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "exports" / "gpu-check")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    report = doctor()
    print(format_report(report))
    (args.out / "doctor.json").write_text(json.dumps(to_json(report), indent=1))
    flavour = flavour_for_compute_capability(report.gpus[0].compute_capability) if report.gpus else None
    needed = (*GPU_CAPABILITIES, f"run-engines-{flavour.name if flavour else 'tensorrt'}")
    missing = [c for c in report.capabilities if c.key in needed and not c.ready]
    for capability in missing:
        print(f"not ready: {capability.name}: {capability.needs}", file=sys.stderr)
    if missing or flavour is None:
        return 1
    export_dir = args.out / "tiny"
    outputs = {kind: args.docs / f"{gpu_slug(report.gpus[0].name)}.{kind}" for kind in ("json", "csv", "png")}
    tests = Step("GPU tests", pytest_command(), args.out / "pytest.txt").run()
    capability = report.gpus[0].compute_capability
    export = Step(f"export with {flavour.title} engines", export_command(export_dir, flavour, capability),
                  args.out / "export.txt").run()
    bench = Step("benchmark", bench_command(export_dir, outputs, flavour, capability), args.out / "bench.txt")
    if export.ok:
        bench.run()
    summary = format_summary(report, [tests, export, bench], export_dir, outputs["json"])
    (args.out / "summary.md").write_text(summary)
    print(f"\n{summary}\n(written to {args.out / 'summary.md'})")
    return 0 if tests.ok and export.ok and bench.ok else 1


def format_summary(report: DoctorReport, steps: list[Step], export_dir: Path, bench_json: Path) -> str:
    """Markdown for an issue: the machine, each step's outcome, engine parity, and the benchmark's key rows."""
    gpu = (f"{report.gpus[0].name}, compute capability {report.gpus[0].compute_capability}, "
           f"{report.gpus[0].memory_gib} GiB" if report.gpus else "no GPU")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:  # no git: a copy of the repository, not a clone
        commit = ""
    versions = (f"smlp-deploy {report.smlp_deploy} ({commit or 'no git'}); driver {report.driver}; torch "
                f"{report.torch} (CUDA {report.torch_cuda}), TensorRT {report.tensorrt}, onnxruntime-gpu "
                f"{report.onnxruntime_gpu}, Python {report.python}")
    lines = [f"### make gpu-check: {gpu}", "", versions, "", "| step | result | seconds |", "| --- | --- | --- |"]
    for step in steps:
        result = "not run" if step.returncode is None else ("ok" if step.ok else f"FAILED ({step.returncode})")
        detail = f": {step.last_line}" if step.returncode is not None else ""
        lines.append(f"| {step.name} | {result}{detail} | {step.seconds:.0f} |")
    if (export_dir / MANIFEST_NAME).is_file():
        manifest = Manifest.load(export_dir / MANIFEST_NAME)
        lines += ["", "| artifact | cosine vs PyTorch | top-1 agreement |", "| --- | --- | --- |"]
        lines += [f"| {a.path} | {a.parity.cosine:.6f} | {a.parity.top1_agreement:.0%} |"
                  for a in manifest.artifacts if a.parity is not None]
    if bench_json.is_file():
        bench = from_json(BenchReport, json.loads(bench_json.read_text()))
        lines += ["", f"`{bench_json.relative_to(ROOT) if bench_json.is_relative_to(ROOT) else bench_json}`:", "",
                  "| target | batch | p50 ms | img/s | vs eager fp32 | GPU compute ms (+H2D +D2H) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in bench.results:
            times = row.device_times
            split = f"{times.compute_ms:.3f} (+{times.h2d_ms:.3f} +{times.d2h_ms:.3f})" if times else "-"
            speedup = f"{row.speedup:.2f}x" if row.speedup else "-"
            lines.append(f"| {row.label} | {row.batch_size} | {row.latency_ms.p50:.3f} | {row.throughput_ips:.0f} | "
                         f"{speedup} | {split} |")
        lines += [f"- skipped {s.backend} {s.precision}: {s.reason}" for s in bench.skipped]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
