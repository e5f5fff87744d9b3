"""The local Triton server against the in-process Classifier on the same export (the figures behind README,
"Serving with Triton").

    python docs/benchmarks/serve_bench.py --variant tiny --concurrency 1,8,64 --duration 6 --repeats 3 \
        --json docs/benchmarks/serve-2core-tiny.json

The server is what smlp-serve runs: the tritonserver of nvidia-pytriton's wheel with the export's ``model.onnx``
behind Classifier in the Python backend (one instance, dynamic batching, no queue delay). At concurrency c, c
client threads each send one preprocessed image per gRPC request and wait for the answer (closed loop); the
in-process baseline calls ``Classifier.logits`` on batches of c images. The two alternate at each concurrency,
``--repeats`` times (the one that goes first alternates too), so their ratios survive a drifting machine.
Latency is per request (server) or per batch call (in-process); throughput is images per second. The server's
statistics give the mean batch its dynamic batcher formed. The model has random weights (seed 0).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from smlp_deploy import Classifier, environment
from smlp_deploy.bench.timing import Latency
from smlp_deploy.export import export_model
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.progress import format_table
from smlp_deploy.samples import sample_images
from smlp_deploy.serving import LocalTritonServer, write_triton_repository

MIN_CALLS = 3  # in-process calls per point, whatever the duration


def serve_closed_loop(server: LocalTritonServer, model: str, images: np.ndarray, concurrency: int,
                      duration_s: float) -> tuple[list[float], float]:
    """Request latencies (ms) of ``concurrency`` clients each sending one image at a time for ``duration_s`` (at
    least one request each), and the images per second completed over the run (requests in flight at the
    deadline are finished)."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration_s

    def client(index: int) -> None:
        connection = grpcclient.InferenceServerClient(server.grpc_url)
        x = images[index % len(images)][None]
        request = grpcclient.InferInput("input", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        while True:
            t0 = time.perf_counter()
            connection.infer(model, [request], client_timeout=600)
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)
            if time.perf_counter() >= deadline:
                break
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, len(latencies) / (time.perf_counter() - start)


def in_process(classifier: Classifier, batch: np.ndarray, duration_s: float) -> tuple[list[float], float]:
    """Call latencies (ms) of ``classifier.logits(batch)`` for ``duration_s`` (at least MIN_CALLS calls) and the
    images per second."""
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s or len(latencies) < MIN_CALLS:
        t0 = time.perf_counter()
        classifier.logits(batch)
        latencies.append((time.perf_counter() - t0) * 1e3)
    return latencies, len(batch) * len(latencies) / (time.perf_counter() - start)


def executed_batches(model: str, server: LocalTritonServer) -> tuple[int, int]:
    """(images, executions) the server's model has run so far, from its statistics."""
    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(model, as_json=True)
    sizes = [(int(b["batch_size"]), int(b["compute_infer"]["count"]))
             for b in stats["model_stats"][0].get("batch_stats", [])]
    return sum(s * n for s, n in sizes), sum(n for _, n in sizes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="tiny")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--export", type=Path, help="an existing export (default: export --variant to a temporary folder)")
    p.add_argument("--concurrency", default="1,8,64", help="comma-separated (default: 1,8,64)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per point and repeat (default: 6)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        export = args.export or export_model(args.variant, image_size=args.image_size, out_dir=Path(scratch) / "export",
                                             quiet=True).out_dir
        repository = write_triton_repository(export, Path(scratch) / "repo", backend="python",
                                             max_batch_size=max(levels), image_input=False)
        model = repository.classifier.name
        classifier = Classifier(export / "model.onnx", max_batch_size=max(levels))
        photos = classifier.preprocess.batch(sample_images())
        images = np.ascontiguousarray(np.concatenate([photos] * (max(levels) // len(photos) + 1))[: max(levels)])
        runs: dict[tuple[str, int], list[dict]] = {}
        with LocalTritonServer(repository.path) as server:
            for c in levels:  # warm-up: both paths at every batch size, untimed
                serve_closed_loop(server, model, images, c, 0.0)
                classifier.logits(images[:c])
            for repeat in range(args.repeats):
                for c in levels:
                    order = ["server", "in-process"] if repeat % 2 == 0 else ["in-process", "server"]
                    for target in order:
                        if target == "server":
                            before = executed_batches(model, server)
                            latencies, rate = serve_closed_loop(server, model, images, c, args.duration)
                            after = executed_batches(model, server)
                            mean_batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
                        else:
                            latencies, rate = in_process(classifier, images[:c], args.duration)
                            mean_batch = float(c)
                        stats = Latency(tuple(latencies)).summary()
                        runs.setdefault((target, c), []).append(
                            {"p50_ms": stats.p50, "p99_ms": stats.p99, "images_per_s": rate, "n": stats.n,
                             "mean_batch": mean_batch})
                        print(f"repeat {repeat + 1} c={c} {target}: p50 {stats.p50:.1f} ms, p99 {stats.p99:.1f} ms, "
                              f"{rate:.1f} img/s, mean batch {mean_batch:.1f} (n={stats.n})", flush=True)
        classifier.close()

    rows, summary = [], []
    for c in levels:
        server_runs, local_runs = runs[("server", c)], runs[("in-process", c)]
        ratios = [s["images_per_s"] / i["images_per_s"] for s, i in zip(server_runs, local_runs, strict=True)]
        latency_ratios = [s["p50_ms"] / i["p50_ms"] for s, i in zip(server_runs, local_runs, strict=True)]
        point = {"concurrency": c, "server": server_runs, "in_process": local_runs,
                 "throughput_ratio": ratios, "p50_ratio": latency_ratios,
                 "overhead_ms": [s["p50_ms"] - i["p50_ms"] for s, i in zip(server_runs, local_runs, strict=True)]}
        summary.append(point)
        for name, data in (("Triton (gRPC, Python backend)", server_runs), ("in-process Classifier", local_runs)):
            rows.append([name, c, _median(data, "p50_ms"), _median(data, "p99_ms"), _median(data, "images_per_s"),
                         f"{statistics.median(d['mean_batch'] for d in data):.1f}",
                         _ratio(ratios) if data is server_runs else "1.00x",
                         _ratio(latency_ratios) if data is server_runs else "1.00x"])
    print()
    print(format_table(["target", "clients / batch", "p50 ms", "p99 ms", "img/s", "mean batch", "img/s vs in-process",
                        "p50 vs in-process"], rows))
    one = next((p for p in summary if p["concurrency"] == 1), None)
    if one:
        print(f"\nserver overhead per request at concurrency 1: {statistics.median(one['overhead_ms']):.1f} ms "
              f"[{min(one['overhead_ms']):.1f} to {max(one['overhead_ms']):.1f}] on p50, "
              f"{_ratio(one['p50_ratio'])} the in-process latency")
    if args.json:
        write_json_atomic(args.json, {"command": vars(args) | {"export": str(args.export) if args.export else None,
                                                               "json": str(args.json)},
                                      "env": environment.capture(), "points": summary})
        print(f"wrote {args.json}")


def _median(runs: list[dict], key: str) -> str:
    return f"{statistics.median(r[key] for r in runs):.1f}"


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    main()
