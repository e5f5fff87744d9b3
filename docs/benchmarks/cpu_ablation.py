"""Which graph and ONNX Runtime settings make the CPU FP32 path fast: each variant of one sMLPNet, timed
interleaved with eager PyTorch in one run (the figures behind README, "Benchmarks").

    python docs/benchmarks/cpu_ablation.py --variant tiny --batch-sizes 1,8 --duration 4 --repeats 3 \
        --json docs/benchmarks/cpu-2core-ablation.json

Variants: the export at opset 18 (GELU as Div/Erf/Add/Mul/Mul) and at the default opset 20 (one Gelu node);
ONNX Runtime's graph optimization levels; one intra-op thread instead of one per core; worker threads that
block instead of spin between calls. Also the session start-up with and without a saved optimized model
(ONNX Runtime's offline optimization), and where the shipped graph spends its time per op type. The model
has random weights (seed 0), as smlp-export without a checkpoint.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from smlp_deploy import environment
from smlp_deploy.bench.timing import measure_interleaved
from smlp_deploy.export.onnx_graph import DEFAULT_OPSET, export_onnx, save_model, simplify
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.models import create_model
from smlp_deploy.progress import format_table
from smlp_deploy.runtime.backends import TorchBackend
from smlp_deploy.runtime.backends.onnxruntime_backend import session_options

EAGER = "eager PyTorch fp32"
SHIPPED = f"opset {DEFAULT_OPSET}, level all (shipped)"
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def variants(onnx_dir: Path, cores: int) -> dict[str, tuple[Path, ort.SessionOptions]]:
    """name -> (model, session options); the first is what smlp-deploy ships (opset 20, level all, spinning)."""
    def options(level="all", threads=cores, spin=True):
        o = session_options(threads)
        o.graph_optimization_level = LEVELS[level]
        o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        return o

    shipped = onnx_dir / f"opset{DEFAULT_OPSET}.onnx"
    return {
        SHIPPED: (shipped, options()),
        "opset 18, level all": (onnx_dir / "opset18.onnx", options()),
        f"opset {DEFAULT_OPSET}, level extended": (shipped, options("extended")),
        f"opset {DEFAULT_OPSET}, level basic": (shipped, options("basic")),
        f"opset {DEFAULT_OPSET}, 1 thread": (shipped, options(threads=1)),
        f"opset {DEFAULT_OPSET}, no spinning": (shipped, options(spin=False)),
    }


def _spread(ratios: list[float]) -> str:
    return f"{np.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def startup_seconds(model: Path, saved: Path, cores: int, repeats: int = 3) -> dict[str, float]:
    """Median session creation time: optimizing at load (level all) against loading a model saved optimized."""
    def create(path, level, save_to=None):
        o = session_options(cores)
        o.graph_optimization_level = level
        if save_to:
            o.optimized_model_filepath = str(save_to)
        start = time.perf_counter()
        ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        return time.perf_counter() - start

    create(model, LEVELS["all"], save_to=saved)
    return {"optimize_at_load_s": float(np.median([create(model, LEVELS["all"]) for _ in range(repeats)])),
            "saved_optimized_s": float(np.median([create(saved, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
                                                  for _ in range(repeats)]))}


def op_profile(model: Path, batch: np.ndarray, cores: int, runs: int = 3) -> dict[str, float]:
    """Share of kernel time per op type (ONNX Runtime's profiler), after one warm-up run."""
    o = session_options(cores)
    o.enable_profiling = True
    o.profile_file_prefix = str(model.with_suffix(""))
    session = ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, {"input": batch})
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    by_op = collections.defaultdict(float)
    for e in kernels[len(kernels) // (runs + 1):]:  # the warm-up run's kernels come first
        by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values())
    return {op: t / total for op, t in sorted(by_op.items(), key=lambda item: -item[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="tiny")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per variant, batch size and repeat")
    p.add_argument("--repeats", type=int, default=3, help="interleaved measurements; ratios are quoted as their "
                   "median and range")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cores = environment.cpu_cores()
    torch.set_num_threads(cores)
    torch.manual_seed(0)
    model = create_model(args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        for opset in (18, DEFAULT_OPSET):
            path = Path(tmp) / f"opset{opset}.onnx"
            save_model(simplify(export_onnx(model, path, opset=opset)).model, path)
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, (path, options) in variants(Path(tmp), cores).items()}
        shipped = Path(tmp) / f"opset{DEFAULT_OPSET}.onnx"
        startup = startup_seconds(shipped, Path(tmp) / "optimized.onnx", cores)
        largest = max(batch_sizes)
        profile = op_profile(shipped, np.zeros((largest, 3, model.image_size, model.image_size), np.float32), cores)
    eager = TorchBackend(model, device="cpu")
    results, rows = [], []
    for batch_size in batch_sizes:
        batch = np.random.default_rng(0).standard_normal((batch_size, 3, model.image_size, model.image_size),
                                                         dtype=np.float32)
        calls = {EAGER: functools.partial(eager.run, batch)}
        calls |= {name: functools.partial(s.run, None, {"input": batch}) for name, s in sessions.items()}
        p50 = [{name: t.summary().p50 for name, t in measure_interleaved(calls, duration_s=args.duration).items()}
               for _ in range(args.repeats)]
        for name in calls:
            vs_eager = [r[EAGER] / r[name] for r in p50]
            vs_shipped = [r[SHIPPED] / r[name] for r in p50]
            results.append({"variant": name, "batch_size": batch_size, "p50_ms": [r[name] for r in p50],
                            "vs_eager": vs_eager, "vs_shipped": vs_shipped})
            rows.append([name, batch_size, f"{np.median([r[name] for r in p50]):.1f}", _spread(vs_eager),
                         _spread(vs_shipped)])
    print(format_table(["variant", "batch", "p50 ms", "vs eager", "vs shipped"], rows))
    print(f"(median of {args.repeats} interleaved measurements; ratios: median [min-max])")
    print(f"session start-up: {startup['optimize_at_load_s']:.2f} s optimizing at load, "
          f"{startup['saved_optimized_s']:.2f} s from a saved optimized model")
    print(f"time per op type, shipped graph, batch {largest}: "
          + ", ".join(f"{op} {share:.1%}" for op, share in profile.items() if share >= 0.005))
    if args.json:
        write_json_atomic(args.json, {"env": environment.capture() | {"threads": cores}, "model": model.variant,
                                      "results": results, "startup": startup,
                                      "op_profile": {"batch_size": largest, "share": profile}})


if __name__ == "__main__":
    main()
