"""Where smlp-bench's memory goes, and what a benchmark command costs (docs/benchmarks.md, "What a run costs").

``arena``: one ONNX Runtime session of an export's model.onnx on the CPU, four calls at each batch size, in a
process of its own per way (peak memory is per process): ``before``, a plain session (the toolkit's session
options, no run options), and ``after``, the toolkit's OnnxRuntimeBackend, whose first run at each input shape
shrinks ONNX Runtime's CPU arena. The RSS after loading and after each call. Then both ways in one process, timed
interleaved (the first calls are warm-up), so their ratio says whether the shrink changes what a benchmark times.

``targets``: what each target of a benchmark holds: the targets smlp-bench's default backends make of an export
at ``--precision``, all loaded, then called in turn at one batch size for ``--rounds`` rounds, the RSS after each
call; run it with ``PYTHONPATH`` at an older source tree to see that tree's figures.

``command``: a command under ``/usr/bin/time -v`` (wall time, peak RSS) with the package imported from
``--checkout`` (a source tree: this one, or an older commit's ``git archive``), and the load average around it.
Each run is appended to ``--json``.

    python docs/benchmarks/bench_memory.py arena EXPORT_DIR --json docs/benchmarks/bench-memory-arena.json
    python docs/benchmarks/bench_memory.py targets EXPORT_DIR --precision fp32,fp16,int8 --batch-size 32 \
        --json docs/benchmarks/bench-memory-targets.json
    python docs/benchmarks/bench_memory.py command --checkout . --label "README example" \\
        --json docs/benchmarks/bench-cost.json -- smlp-bench --artifacts EXPORT_DIR ...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smlp_deploy.bench.timing import measure_interleaved
from smlp_deploy.environment import capture
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, session_options

CALLS = 4


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]


def plain_session(model: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """What the backend ran before the shrink: the same session options, no run options."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), session_options(threads), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def child(model: Path, way: str, batch_size: int, threads: int) -> None:
    run = plain_session(model, threads) if way == "before" else OnnxRuntimeBackend(model, device="cpu",
                                                                                     threads=threads).run
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, 224, 224), dtype=np.float32)
    rss = [rss_mib()]
    for _ in range(CALLS):
        run(batch)
        rss.append(rss_mib())
    print(json.dumps(rss))


def arena(args: argparse.Namespace) -> dict:
    model = args.export_dir / "model.onnx"
    memory: dict[str, dict[str, list[float]]] = {}
    for batch_size in args.batch_sizes:
        for way in ("before", "after"):
            done = subprocess.run([sys.executable, __file__, "_child", str(model), way, str(batch_size),
                                   str(args.threads)], check=True, capture_output=True, text=True)
            rss = memory.setdefault(str(batch_size), {})[way] = json.loads(done.stdout.splitlines()[-1])
            print(f"batch {batch_size} {way}: RSS MiB after loading, then after each call: {rss}")
    timing = {}
    before = plain_session(model, args.threads)
    after = OnnxRuntimeBackend(model, device="cpu", threads=args.threads)
    for batch_size in args.batch_sizes:
        batch = np.random.default_rng(0).standard_normal((batch_size, 3, 224, 224), dtype=np.float32)
        timed = measure_interleaved({"before": lambda: before(batch), "after": lambda: after.run(batch)},  # noqa: B023
                                    warmup=2, duration_s=args.duration)
        p50 = {way: t.summary().p50 for way, t in timed.items()}
        timing[str(batch_size)] = {"p50_ms": p50, "after_over_before": p50["after"] / p50["before"]}
        print(f"batch {batch_size}: p50 {p50}, after/before {p50['after'] / p50['before']:.3f}")
    return {"rss_mib_after_load_and_each_call": memory, "timing": timing}


def targets(args: argparse.Namespace) -> dict:
    from smlp_deploy.bench.results import Skipped
    from smlp_deploy.bench.targets import DEFAULT_BACKENDS, resolve
    from smlp_deploy.manifest import Manifest
    from smlp_deploy.models.registry import create_model

    info = Manifest.load(args.export_dir / "manifest.json").model
    model = create_model(info.name, num_classes=info.num_classes, image_size=info.image_size)
    found = [t for b in DEFAULT_BACKENDS for p in args.precision.split(",")
             for t in resolve(b, p, model=model, artifacts=args.export_dir, device="cpu", threads=args.threads)]
    loaded = {}
    for target in found:
        if not isinstance(target, Skipped):
            try:
                loaded[target.label] = target.load()
            except Exception as exc:  # as the benchmark does: a target that fails to load is skipped
                print(f"skipped {target.label}: {exc}")
    rss = {"loaded": rss_mib()}
    batch = np.random.default_rng(0).standard_normal((args.batch_size, 3, info.image_size, info.image_size),
                                                     dtype=np.float32)
    for round_ in range(1, args.rounds + 1):
        for label, backend in loaded.items():
            backend.run(batch)
            rss[f"round {round_}: {label}"] = rss_mib()
            print(f"round {round_}: {label:<36} RSS {rss_mib():6.0f} MiB")
    return {"batch_size": args.batch_size, "rss_mib": rss}


def command(args: argparse.Namespace) -> dict:
    # a console script of this environment (smlp-bench), as the venv's bin would run it
    argv = [shutil.which(args.argv[0], path=Path(sys.executable).parent) or args.argv[0], *args.argv[1:]]
    env = {**os.environ, "PYTHONPATH": str(Path(args.checkout).resolve())}
    load_before = os.getloadavg()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], check=False, capture_output=True, text=True, env=env)
    load_after = os.getloadavg()
    if done.returncode:
        sys.exit(f"{args.label}: exit status {done.returncode}\n{done.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)", done.stderr)[1]  # type: ignore[index]
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) / 2**20  # type: ignore[index]
    print(f"{args.label}: {seconds:.0f} s, peak RSS {peak:.2f} GiB, load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    return {"label": args.label, "checkout": args.checkout, "argv": args.argv, "status": done.returncode,
            "wall_s": seconds, "peak_rss_gib": peak, "load_1min_before_after": [load_before[0], load_after[0]],
            "stderr_tail": done.stderr.splitlines()[-40:-23]}


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        model, way, batch_size, threads = sys.argv[2:]
        return child(Path(model), way, int(batch_size), int(threads))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("arena")
    a.add_argument("export_dir", type=Path)
    a.add_argument("--batch-sizes", type=lambda t: [int(n) for n in t.split(",")], default=[8, 32])
    a.add_argument("--threads", type=int, default=os.cpu_count())
    a.add_argument("--duration", type=float, default=20.0, help="seconds of timed calls per way (default: 20)")
    t = sub.add_parser("targets")
    t.add_argument("export_dir", type=Path)
    t.add_argument("--precision", default="fp32,fp16,int8")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    c = sub.add_parser("command")
    c.add_argument("--checkout", default=".")
    c.add_argument("--label", required=True)
    c.add_argument("argv", nargs=argparse.REMAINDER)
    for p in (a, t, c):
        p.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.what == "command":
        args.argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    result = {"arena": arena, "targets": targets, "command": command}[args.what](args)
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.is_file() else {"runs": []}
        previous["runs"].append({"command": " ".join(sys.argv), "machine": capture(), **result})
        write_json_atomic(args.json, previous)


if __name__ == "__main__":
    main()
