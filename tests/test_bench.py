"""smlp-bench on the small test variant: every output format, skips with reasons, ratios against eager PyTorch."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from smlp_deploy.bench import BenchConfig, run_benchmark
from smlp_deploy.bench.heartbeat import Heartbeat
from smlp_deploy.bench.timing import measure, measure_interleaved
from smlp_deploy.cli.bench import entry_point
from smlp_deploy.errors import InputError

from .reliability import CTRL_C_AS_IN_A_TERMINAL


@pytest.fixture(scope="module")
def artifacts(every_precision_64):
    """The test variant in every precision, INT8 in both forms (conftest's)."""
    return every_precision_64.out_dir


def test_cli_writes_table_json_csv_and_plot(artifacts, tmp_path, capsys, monkeypatch):
    """The JSON is written without --json: beside the plot."""
    paths = {k: tmp_path / f"bench.{k}" for k in ("json", "csv", "png")}
    monkeypatch.setattr("sys.argv", [
        "smlp-bench", "--artifacts", str(artifacts), "--backends", "torch,onnxruntime,tensorrt",
        "--precision", "fp32,fp16,int8", "--batch-sizes", "1,4", "--device", "cpu", "--iters", "5", "--warmup", "1",
        "--end-to-end", "--threads", "1", "--csv", str(paths["csv"]), "--plot", str(paths["png"])])
    threads = torch.get_num_threads()
    assert entry_point() == 0
    assert torch.get_num_threads() == threads  # the benchmark's thread count is not left behind
    printed, progress = capsys.readouterr()
    assert progress.startswith(f"results: {paths['json']}, written as each batch size is measured")
    assert "] batch 4: 5 target(s) loaded" in progress and "] batch 4: timing 6 calls in rounds" in progress
    assert "vs eager fp32" in printed and "skipped torch int8: eager PyTorch has no INT8 path" in printed
    assert "onnxruntime int8 (TensorRT's form) *" in printed
    assert "* model.int8.onnx is the Q/DQ form TensorRT builds" in printed

    report = json.loads(paths["json"].read_text())
    assert report["complete"] is True
    assert report["env"]["cpu_cores"] >= 1 and report["env"]["versions"]["onnxruntime"]
    assert report["peak_gflops"]["fp32"] > 0
    measured = {(r["backend"], r["precision"], r["batch_size"])
                for r in report["results"] if r["backend"] != "tensorrt"}
    assert measured == {(b, p, n) for b in ("torch", "onnxruntime") for p in ("fp32",) for n in (1, 4)} | {
        ("onnxruntime", p, n) for p in ("fp16", "int8") for n in (1, 4)}
    assert {r["artifact"]: r.get("note") is not None for r in report["results"] if r["precision"] == "int8"} == {
        "model.int8.onnx": True, "model.int8.cpu.onnx": False}
    # the label is what the table and the plot's legend show
    assert {r["artifact"]: r["label"] for r in report["results"] if r["precision"] == "int8"} == {
        "model.int8.onnx": "onnxruntime int8 (TensorRT's form)", "model.int8.cpu.onnx": "onnxruntime int8 (cpu form)"}
    for r in report["results"]:
        lat = r["latency_ms"]
        assert lat["n"] == 5 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r["throughput_ips"] == pytest.approx(r["batch_size"] / lat["p50"] * 1e3)
        assert r["gflops"] > 0 and 0 < r["peak_fraction"] and r["peak_rss_mib"] > 0
        assert 0 < r["end_to_end"]["preprocess_share"] < 1
        if r["backend"] == "torch":
            assert r["speedup"] == 1.0
    skipped = {(s["backend"], s["precision"]) for s in report["skipped"]}
    assert {("torch", "int8"), ("torch", "fp16")} <= skipped
    assert all(s["reason"] for s in report["skipped"])

    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(report["results"]) and float(rows[0]["p50_ms"]) > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 20_000

    # A saved report shows again, the same table, with nothing timed; what is not a report is named.
    monkeypatch.setattr("sys.argv", ["smlp-bench", "--from-json", str(paths["json"]), "--plot",
                                     str(tmp_path / "again.png")])
    assert entry_point() == 0
    assert capsys.readouterr().out.splitlines()[:-1] == printed.splitlines()[:-3]
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr("sys.argv", ["smlp-bench", "--from-json", str(paths["csv"])])
    assert entry_point() == 2
    assert "error: --from-json: " in capsys.readouterr().err


def test_a_stopped_run_keeps_what_it_measured(artifacts, tmp_path, capsys, monkeypatch):
    """Ctrl-C once the first rows are in: the JSON the first line named (here the default, in the working folder)
    holds every row measured, marked partial, and --from-json redraws it: table, CSV, plot."""
    # Ctrl-C as a terminal gives it: a suite started in the background (nohup, `make test &`) ignores SIGINT
    script = CTRL_C_AS_IN_A_TERMINAL + "import sys; from smlp_deploy.cli.bench import entry_point; " \
        "sys.argv[0] = 'smlp-bench'; sys.exit(entry_point())"
    sizes = ",".join(str(n) for n in range(1, 33))  # far more than the run reaches before it is stopped
    argv = ["--artifacts", str(artifacts), "--backends", "onnxruntime", "--batch-sizes", sizes, "--device", "cpu",
            "--threads", "1", "--warmup", "1", "--iters", "5"]
    with subprocess.Popen([sys.executable, "-c", script, *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as run:
        first = run.stderr.readline()
        saved = tmp_path / first.removeprefix("results: ").split(",")[0]
        assert first.startswith("results: smlp-bench-") and saved.suffix == ".json", first
        while not (saved.is_file() and json.loads(saved.read_text())["results"]):
            assert run.poll() is None, run.stderr.read()
            time.sleep(0.02)
        run.send_signal(signal.SIGINT)
        err = run.communicate(timeout=120)[1]
    assert run.returncode == 130 and "interrupted" in err, err
    report = json.loads(saved.read_text())
    assert report["complete"] is False and f"row(s) measured are in {saved.name}" in err, err
    measured = sorted({r["batch_size"] for r in report["results"]})
    assert measured == list(range(1, len(measured) + 1)) and len(measured) < 32  # batch sizes in order, none torn
    assert sorted((r["batch_size"], r["backend"]) for r in report["results"]) == [
        (n, b) for n in measured for b in ("onnxruntime", "torch")]
    assert all(r["speedup"] for r in report["results"])

    again = {k: tmp_path / f"again.{k}" for k in ("csv", "png")}
    monkeypatch.setattr("sys.argv", ["smlp-bench", "--from-json", str(saved), "--csv", str(again["csv"]), "--plot",
                                     str(again["png"])])
    assert entry_point() == 0
    shown = capsys.readouterr().out
    assert f"partial: the run stopped before its end; {len(report['results'])} row(s) measured" in shown
    assert len(list(csv.DictReader(again["csv"].open()))) == len(report["results"])
    assert again["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_batch_size_loads_its_targets_afresh_and_closes_them(artifacts):
    """A session keeps the memory of every batch size it ran (ONNX Runtime's arena), so each batch size has its own:
    all of a batch size's targets are open together (they are timed interleaved) and closed before the next."""
    from smlp_deploy.bench.peak import matmul_probe
    from smlp_deploy.bench.runner import _bench_targets
    from smlp_deploy.bench.targets import resolve
    from smlp_deploy.manifest import Manifest
    from smlp_deploy.runtime.preprocess import Preprocessor

    opened = []

    def load(real):
        opened.append(real())
        return opened[-1]

    targets = [dataclasses.replace(t, load=functools.partial(load, t.load)) for p in ("fp32", "fp16")
               for t in resolve("onnxruntime", p, model=None, artifacts=artifacts, device="cpu", threads=1)]
    config = BenchConfig(batch_sizes=(1, 3), warmup=0, iters=5)
    preprocessor = Preprocessor(Manifest.load(artifacts / "manifest.json").preprocess)
    batches = _bench_targets(targets, {"fp32": matmul_probe()}, config, preprocessor, 1, [], Heartbeat(lambda _: None))
    for count, (rows, _) in enumerate(batches, start=1):
        assert len(opened) == 2 * count and all(backend.closed for backend in opened)
        assert {row.batch_size for row in rows} == {config.batch_sizes[count - 1]} and len(rows) == 2
    assert count == 2


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(InputError, match="backends must be among"):
        run_benchmark(BenchConfig(backends=("tvm",)))
    with pytest.raises(InputError, match="batch sizes must be positive"):
        run_benchmark(BenchConfig(batch_sizes=(0,)))
    with pytest.raises(InputError, match="not an export directory"):
        run_benchmark(BenchConfig(artifacts=tmp_path))


def test_measure_counts_and_orders():
    calls = []
    latency = measure(lambda: calls.append(1), warmup=2, iters=7)
    assert len(calls) == 9 and latency.summary().n == 7
    assert measure(lambda: None, warmup=0, duration_s=0.0).summary().n == 5  # at least MIN_ITERS


def test_interleaved_rounds_settle_each_callable_before_timing_it():
    order, timed_results = [], []

    def call(k):
        order.append(k)
        return len(order)  # the position of this call

    said = []
    timed = measure_interleaved({k: (lambda k=k: call(k)) for k in "ab"}, warmup=1, iters=4, block=3,
                                on_result=lambda k, position: timed_results.append((k, position)),
                                progress=lambda what: said.append((what, len(order))))
    # warm-up; then per round and callable one untimed call and up to `block` timed ones, 4 timed in all
    assert "".join(order) == "a" "b" + "aaaa" "bbbb" + "aa" "bb"
    assert {k: t.summary().n for k, t in timed.items()} == {"a": 4, "b": 4}
    # only timed calls reach on_result: not the warm-up (1, 2) nor the settling calls (3, 7, 11, 13)
    assert timed_results == [("a", 4), ("a", 5), ("a", 6), ("b", 8), ("b", 9), ("b", 10), ("a", 12), ("b", 14)]
    # progress: what starts next, said between calls (with the number of calls made before it)
    assert said == [("warm-up: a", 0), ("warm-up: b", 1), ("round 1: a", 2), ("round 1: b", 6), ("round 2: a", 10),
                    ("round 2: b", 12)]


def test_heartbeat_says_phases_at_once_and_beats_only_after_a_silence():
    lines: list[str] = []
    heartbeat = Heartbeat(lines.append, every_s=3600)
    heartbeat.say("batch 1: timing")
    heartbeat.beat("round 1: onnxruntime fp32")  # within the hour: nothing
    assert lines == ["[ 0:00] batch 1: timing"]
    heartbeat.every_s = 0
    heartbeat.beat("round 2: onnxruntime fp32")
    heartbeat.every_s = 3600
    with heartbeat.ticking("exporting"):  # said as it starts, then every_s apart
        pass
    assert lines[1:] == ["[ 0:00] round 2: onnxruntime fp32", "[ 0:00] exporting"]


def test_interleaved_budget_counts_timed_calls_only():
    timed = measure_interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.002)}, warmup=0, duration_s=0.02)
    assert timed["slow"].summary().n >= 5 and sum(timed["slow"].samples_ms) >= 20
    assert timed["fast"].summary().n > timed["slow"].summary().n  # each runs to its own budget
    with pytest.raises(ValueError, match="at least one"):
        measure_interleaved({})


def test_an_artifact_timed_on_a_backend_it_is_not_meant_for_is_marked(tmp_path):
    """The TensorRT form of INT8 on ONNX Runtime's CPU kernels is slower than FP32 by design: its rows say so
    and name the artifact to time instead."""
    from smlp_deploy.bench.targets import resolve

    for name in ("model.int8.onnx", "model.int8.cpu.onnx"):  # found by name; nothing is loaded here
        (tmp_path / name).write_bytes(b"")
    targets = resolve("onnxruntime", "int8", model=None, artifacts=tmp_path, device="cpu", threads=1)
    notes = {t.artifact.file_name: t.note for t in targets}
    assert notes["model.int8.cpu.onnx"] is None
    assert "model.int8.onnx is the Q/DQ form TensorRT builds" in notes["model.int8.onnx"]
    assert "time model.int8.cpu.onnx" in notes["model.int8.onnx"]
    # FP8 has one form, TensorRT's: its note says it is for GPUs; eager PyTorch has no FP8 path.
    (tmp_path / "model.fp8.onnx").write_bytes(b"")
    (fp8,) = resolve("onnxruntime", "fp8", model=None, artifacts=tmp_path, device="cpu", threads=1)
    assert "model.fp8.onnx is the Q/DQ form TensorRT builds" in fp8.note and "FP8 is for GPUs (engines)" in fp8.note
    (skipped,) = resolve("torch", "fp8", model=None, artifacts=tmp_path, device="cpu", threads=1)
    assert skipped.reason.startswith("eager PyTorch has no FP8 path for sMLPNet")


def test_cpu_precision_classes_beside_their_peers(artifacts):
    """OpenVINO's fp32, bf16 (on the FP32 file) and int8 (the CPU form) rows beside ONNX Runtime, eager PyTorch in
    bf16 and OpenVINO called directly, all in one interleaved run; what cannot run says why."""
    pytest.importorskip("openvino", reason="needs OpenVINO (extra 'openvino')")
    from smlp_deploy.cpu import openvino_cpu_capabilities

    bf16 = "BF16" in openvino_cpu_capabilities()
    report = run_benchmark(BenchConfig(variant="test", backends=("torch", "onnxruntime", "openvino", "openvino-direct"),
                                       precisions=("fp32", "bf16", "int8"), batch_sizes=(2,), artifacts=artifacts,
                                       warmup=1, iters=3, device="cpu", threads=1), log=lambda line: None)
    rows = {(r.backend, r.precision, r.artifact) for r in report.results}
    assert {("openvino", "fp32", "model.onnx"), ("openvino", "int8", "model.int8.cpu.onnx"),
            ("openvino-direct", "fp32", "model.onnx"), ("openvino-direct", "int8", "model.int8.cpu.onnx"),
            ("onnxruntime", "int8", "model.int8.cpu.onnx"), ("torch", "bf16", None)} <= rows
    assert (("openvino", "bf16", "model.onnx") in rows) == bf16 == (("openvino-direct", "bf16", "model.onnx") in rows)
    skipped = {(s.backend, s.precision): s.reason for s in report.skipped}
    assert skipped[("onnxruntime", "bf16")] == "onnxruntime does not compute in bf16; openvino does"
    assert "model.int8.onnx is the INT8 Q/DQ form for TensorRT" in skipped[("openvino", "int8")]
    labels = {r.label for r in report.results}
    assert {"openvino int8 (cpu form)", "openvino-direct fp32"} <= labels
