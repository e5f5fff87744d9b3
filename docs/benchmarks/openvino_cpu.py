"""Two choices of the openvino backend, measured (the figures behind README, "On CPUs"):

* ``load``: is an OpenVINO IR written at export time worth a file of its own? Load time of an export's model.onnx
  as the backend loads it (OpenVINO reads the ONNX file, then compiles it) against the same model saved as IR
  beforehand (model.xml + model.bin), in FP32 and bf16, with ONNX Runtime's session start-up beside them.
* ``shapes``: what the dynamic batch dimension costs: the model compiled as exported (any batch) against one whose
  batch is bounded (1 to the largest size timed) and one compiled for each batch size, timed interleaved at each
  size, in FP32 and bf16.

Interleaved rounds, medians.

    python docs/benchmarks/openvino_cpu.py load EXPORT_DIR --rounds 5 --json docs/benchmarks/openvino-load-tiny.json
    python docs/benchmarks/openvino_cpu.py shapes EXPORT_DIR --rounds 3 --json docs/benchmarks/openvino-shapes-tiny.json
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

from smlp_deploy.bench.timing import measure_interleaved
from smlp_deploy.environment import capture
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.progress import format_table
from smlp_deploy.runtime import load_backend
from smlp_deploy.runtime.backends.openvino_backend import PRECISIONS


def openvino_seconds(model: Path, precision: str) -> tuple[float, float]:
    """Seconds to read ``model`` (ONNX or IR) and to have it compiled, as the openvino backend does."""
    start = time.perf_counter()
    core = ov.Core()
    read = core.read_model(str(model))
    loaded = time.perf_counter()
    core.compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"})
    return loaded - start, time.perf_counter() - start


def onnxruntime_seconds(model: Path) -> tuple[float, float]:
    start = time.perf_counter()
    load_backend(model, "onnxruntime", device="cpu").close()
    return 0.0, time.perf_counter() - start


def load(args: argparse.Namespace) -> dict:
    onnx = args.export_dir / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        ir = Path(tmp) / "model.xml"
        ov.save_model(ov.Core().read_model(str(onnx)), str(ir), compress_to_fp16=False)
        ir_mib = (ir.stat().st_size + ir.with_suffix(".bin").stat().st_size) / 2**20
        ways = {f"{name} {precision}": (lambda path=path, precision=precision: openvino_seconds(path, precision))
                for precision in PRECISIONS for name, path in (("OpenVINO from ONNX", onnx), ("OpenVINO from IR", ir))}
        ways["ONNX Runtime session"] = lambda: onnxruntime_seconds(onnx)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, load in ways.items():
                times[name].append(load())
    rows = {name: {"read_s": statistics.median(r for r, _ in t), "total_s": statistics.median(s for _, s in t),
                   "range_s": [min(s for _, s in t), max(s for _, s in t)]} for name, t in times.items()}
    print(format_table(["load", "read s (median)", "read + compile s (median)", "range"],
                       [[k, f"{v['read_s']:.3f}", f"{v['total_s']:.3f}", "{:.3f}-{:.3f}".format(*v["range_s"])]
                        for k, v in rows.items()]))
    print(f"\nIR: {ir_mib:.1f} MiB beside model.onnx's {onnx.stat().st_size / 2**20:.1f} MiB")
    return {"ir_mib": ir_mib, "results": rows}


def shapes(args: argparse.Namespace) -> dict:
    """p50 of the dynamic-batch compile, of a bounded one and of a static one per batch size, and the speed-up of
    each over the dynamic one in each round."""
    core, onnx = ov.Core(), str(args.export_dir / "model.onnx")
    results, table = {}, []

    def speedups(rounds: list[dict[str, float]], name: str) -> list[float]:
        return [r["dynamic"] / r[name] for r in rounds]

    def cell(ratios: list[float]) -> str:
        return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"

    for precision, hint in PRECISIONS.items():
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        for batch in args.batch_sizes:
            models = {name: core.read_model(onnx) for name in ("dynamic", "bounded", "static")}
            sample = [d.get_length() for d in list(models["static"].input(0).get_partial_shape())[1:]]
            models["bounded"].reshape([ov.Dimension(1, max(args.batch_sizes)), *sample])
            models["static"].reshape([batch, *sample])
            x = np.random.default_rng(0).standard_normal((batch, *sample), dtype=np.float32)
            calls = {name: functools.partial(core.compile_model(model, "CPU", config).create_infer_request().infer,
                                             {0: x}, share_inputs=True) for name, model in models.items()}
            rounds = [{name: t.summary().p50 for name, t in measure_interleaved(
                calls, warmup=2, iters=None, duration_s=2).items()} for _ in range(args.rounds)]
            results[f"{precision} batch {batch}"] = {"rounds_ms": rounds,
                                                     "bounded_speedup": speedups(rounds, "bounded"),
                                                     "static_speedup": speedups(rounds, "static")}
            table.append([precision, batch, *(f"{statistics.median(r[n] for r in rounds):.1f}" for n in calls),
                          cell(speedups(rounds, "bounded")), cell(speedups(rounds, "static"))])
    print(format_table(["precision", "batch", "dynamic batch (shipped) ms", f"batch 1-{max(args.batch_sizes)} ms",
                        "static batch ms", "bounded speed-up", "static speed-up"], table))
    return {"results": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["load", "shapes"])
    p.add_argument("export_dir", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    found = (load if args.what == "load" else shapes)(args)
    if args.json:
        write_json_atomic(args.json, {"env": capture(), "rounds": args.rounds, **found})


if __name__ == "__main__":
    main()
