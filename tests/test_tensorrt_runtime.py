"""The TensorRT runtime: CUDA graphs, the device index, the GPU time split, per-call messages, plugins.

Tests marked ``tensorrt`` need TensorRT and a GPU (``make gpu-check`` runs them); elsewhere they skip with the
reason. The rest run here: the parts that are plain Python, and the errors for options that are TensorRT's.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from smlp_deploy import Classifier
from smlp_deploy.errors import ArtifactError, InputError
from smlp_deploy.export import BatchProfile, BuildOptions, build_from_onnx
from smlp_deploy.runtime.backends import load_backend
from smlp_deploy.tensorrt.engine import MAX_CONTEXTS, Pool, padded
from smlp_deploy.tensorrt.messages import TensorRTMessages

from .conftest import photo_batch

SIZE = 64


@pytest.fixture(scope="module")
def export_dir(fp16_export):
    """The test variant at 64 px, FP32 and FP16, with the engines of every flavour that builds here (batch profile
    1:4:8): conftest's fp16_export."""
    return fp16_export.out_dir


def test_messages_are_kept_per_thread_and_per_call(caplog):
    """An error reports the messages logged during that call on that thread: not earlier ones, not another
    thread's; every warning and error still reaches ``logging``."""
    messages = TensorRTMessages()
    messages.record(logging.ERROR, "from an earlier call")
    seen: dict[str, list[str]] = {}
    inside = threading.Barrier(2)

    def call(name: str) -> None:
        with messages.capture() as captured:
            inside.wait()
            messages.record(logging.ERROR, f"{name} failed")
            messages.record(logging.INFO, f"{name} info")  # below WARNING: neither kept nor logged
            inside.wait()
        seen[name] = captured

    with caplog.at_level(logging.WARNING, logger="smlp_deploy.tensorrt.messages"):
        threads = [threading.Thread(target=call, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with messages.capture() as outer:
            messages.record(logging.WARNING, "outer")
            with messages.capture() as inner:
                messages.record(logging.ERROR, "inner")
            messages.record(logging.WARNING, "outer again")
    assert seen == {"a": ["a failed"], "b": ["b failed"]}
    assert outer == ["outer", "outer again"] and inner == ["inner"]
    assert sorted(r.getMessage() for r in caplog.records) == sorted(
        f"TensorRT: {m}" for m in ("from an earlier call", "a failed", "b failed", "outer", "inner", "outer again"))
    caplog.clear()
    quiet = TensorRTMessages(echo=False)  # the builder's: it reports what it captured itself, once each
    with caplog.at_level(logging.WARNING), quiet.capture() as captured:
        quiet.record(logging.WARNING, "Converting conv weight scales to fp32.")
    assert captured == ["Converting conv weight scales to fp32."] and not caplog.records


@pytest.mark.filterwarnings("ignore:.*random weights")
@pytest.mark.parametrize("option", [{"cuda_graphs": True}, {"plugin_libraries": ["libplugin.so"]}])
def test_tensorrt_options_on_another_backend_are_refused(export_dir, option):
    name = next(iter(option))
    with pytest.raises(InputError, match=f"{name} applies to backends tensorrt, tensorrt-rtx; .*model.onnx' runs on "
                                         "onnxruntime"):
        load_backend(export_dir / "model.onnx", **option)
    if name == "cuda_graphs":
        with pytest.raises(InputError) as error:
            Classifier(export_dir / "model.onnx", cuda_graphs=True)
        assert error.value.parameter == "cuda_graphs"


@pytest.mark.tensorrt
@pytest.mark.parametrize("engine", ["engine.fp32.plan", "engine.fp16.plan"])
def test_cuda_graphs_give_the_same_logits(export_dir, engine):
    """Captured at each batch size on first use, replayed after: the same logits as plain execution, for sizes
    that alternate (a replay after another size's capture)."""
    batch = photo_batch(SIZE)
    with Classifier(export_dir / engine) as plain, Classifier(export_dir / engine, cuda_graphs=True) as graphs:
        reference = plain.logits(batch)
        for size in (5, 1, 5, 3, 1):
            np.testing.assert_allclose(graphs.logits(batch[:size]), reference[:size], rtol=0,
                                       atol=1e-5 * float(np.abs(reference).max()))
        state = graphs.backend._state()
        assert sorted(state.graphs) == [1, 3, 5]
        assert "CUDA graphs" in graphs.describe()


@pytest.mark.tensorrt
def test_every_context_stream_and_buffer_is_on_the_device(export_dir):
    import torch

    count = torch.cuda.device_count()
    for index in range(min(count, 2)):
        backend = load_backend(export_dir / "engine.fp32.plan", device=f"cuda:{index}")
        backend.run(photo_batch(SIZE))
        with backend.engine._pool.lend() as state:  # the context that call made, lent again
            assert backend.device == torch.device("cuda", index)
            assert state.stream.device == backend.device
            assert all(buffer.device == backend.device for buffer in state.device_buffers.values())
            assert state.host_in.is_pinned() and state.host_out.is_pinned()
        backend.close()
    with pytest.raises(InputError, match=f"this machine has {count} CUDA device") as error:
        load_backend(export_dir / "engine.fp32.plan", device=f"cuda:{count}")
    assert error.value.parameter == "device"
    with pytest.raises(InputError, match="device 'cpu' is not one backend 'tensorrt' runs on: it takes cuda, cuda:N"):
        load_backend(export_dir / "engine.fp32.plan", device="cpu")


@pytest.mark.tensorrt
def test_each_call_splits_its_gpu_time(export_dir):
    backend = load_backend(export_dir / "engine.fp16.plan")
    assert backend.last_times() is None
    backend.run(photo_batch(SIZE))
    times = backend.last_times()
    assert times is not None and times.compute_ms > 0 and times.h2d_ms > 0 and times.d2h_ms > 0


@pytest.mark.tensorrt
def test_a_bad_engine_reports_its_own_messages_only(export_dir, tmp_path):
    broken = tmp_path / "engine.fp32.plan"
    broken.write_bytes((export_dir / "engine.fp32.plan").read_bytes()[:4096])
    errors = []
    for _ in range(2):
        with pytest.raises(ArtifactError, match="cannot load engine") as error:
            load_backend(broken)
        errors.append(str(error.value))
    assert errors[0] == errors[1]  # the second error does not carry the first one's messages again


@pytest.mark.tensorrt
def test_no_plugin_library_unless_named(export_dir, tmp_path):
    backend = load_backend(export_dir / "engine.fp32.plan")
    assert backend._plugins == [] and backend._runtime.engine_host_code_allowed is False
    with pytest.raises(InputError, match=r"plugin library .*missing\.so' does not exist") as error:
        load_backend(export_dir / "engine.fp32.plan", plugin_libraries=[tmp_path / "missing.so"])
    assert error.value.parameter == "plugin_libraries"


@pytest.mark.tensorrt
def test_the_benchmark_separates_engine_compute_from_copies(export_dir, tmp_path):
    from smlp_deploy.bench import BenchConfig, run_benchmark

    report = run_benchmark(BenchConfig(artifacts=export_dir, backends=("tensorrt",), precisions=("fp32", "fp16"),
                                       batch_sizes=(1, 8), iters=5, warmup=2), log=lambda _: None)
    rows = [r for r in report.results if r.backend == "tensorrt"]
    assert {(r.precision, r.batch_size) for r in rows} == {(p, n) for p in ("fp32", "fp16") for n in (1, 8)}
    for row in rows:
        times = row.device_times
        assert times is not None and times.compute_ms > 0
        assert times.h2d_ms + times.compute_ms + times.d2h_ms <= row.latency_ms.p90
    assert all(r.device_times is None for r in report.results if r.backend != "tensorrt")


def test_a_batch_below_the_profile_minimum_is_padded_and_cut_back():
    batch = photo_batch(SIZE)[:2]
    grown = padded(batch, 4)
    assert grown.shape == (4, 3, SIZE, SIZE) and np.array_equal(grown[:2], batch)
    assert np.array_equal(grown[2], batch[1]) and np.array_equal(grown[3], batch[1])
    assert padded(batch, 1) is batch and padded(batch, 2) is batch


def test_the_context_pool_never_makes_more_than_its_limit():
    """32 threads through a pool of 4: at most 4 states are made, and no two threads hold one at the same time
    (an execution context is not thread-safe)."""
    holders: dict[int, int] = {}
    lock = threading.Lock()
    pool = Pool(object, 4)
    start = threading.Barrier(32)
    clashes = []

    def call() -> None:
        start.wait()
        for _ in range(20):
            with pool.lend() as state:
                with lock:
                    clashes.append(holders.get(id(state), 0))
                    holders[id(state)] = holders.get(id(state), 0) + 1
                with lock:
                    holders[id(state)] -= 1

    threads = [threading.Thread(target=call) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pool.made <= 4 and len(holders) == pool.made and not any(clashes) and len(clashes) == 640


@pytest.mark.tensorrt
def test_many_threads_share_a_bounded_number_of_contexts(export_dir):
    backend = load_backend(export_dir / "engine.fp16.plan")
    expected = backend.run(photo_batch(SIZE))
    results = []

    def call() -> None:
        results.append(backend.run(photo_batch(SIZE)))

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.engine.contexts <= MAX_CONTEXTS and len(results) == 16
    assert all(np.array_equal(r, expected) for r in results)
    backend.close()


@pytest.mark.tensorrt
def test_an_engine_with_a_minimum_batch_runs_one_image(export_dir, tmp_path):
    """Built for batches 4 to 8, it still answers one image (padded to 4), the same as the 1:4:8 engine does."""
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    build_from_onnx(copy, BuildOptions(BatchProfile(4, 4, 8), workspace_mib=1024), flavours=("tensorrt",), quiet=True)
    one = photo_batch(SIZE)[:1]
    with load_backend(copy / "engine.fp16.plan") as four, load_backend(export_dir / "engine.fp16.plan") as any_:
        assert four.engine.min_batch_size == 4
        np.testing.assert_allclose(four.run(one), any_.run(one), rtol=1e-2, atol=1e-2)
