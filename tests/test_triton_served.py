"""A real Triton server on this machine: the tritonserver binary in nvidia-pytriton's wheel (installed by `make
test`) serves a repository that smlp-triton wrote (Classifier and the image ensemble in the Python backend), and
tritonclient queries it over HTTP and gRPC. Servers listen on 127.0.0.1 only and are stopped by the tests, also
when they fail; the tests skip, with the reason, where the server cannot be installed."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from smlp_deploy import Classifier
from smlp_deploy.errors import BackendUnavailableError
from smlp_deploy.models import PreprocessConfig
from smlp_deploy.runtime import Preprocessor
from smlp_deploy.samples import sample_images
from smlp_deploy.serving import LocalTritonServer, find_tritonserver, write_triton_repository

from .conftest import SKIMAGE_DATA
from .reliability import CTRL_C_AS_IN_A_TERMINAL

grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc,http] (extra 'serve')")
httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[grpc,http] (extra 'serve')")
from tritonclient.utils import InferenceServerException  # noqa: E402 (after the importorskips)

TIMEOUT_S = 60  # per request; a server that stops answering fails the test instead of hanging it


def server_unavailable_reason() -> str | None:
    try:
        find_tritonserver()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


UNAVAILABLE = server_unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"needs the local tritonserver: {UNAVAILABLE}")


@dataclass
class Served:
    server: LocalTritonServer
    name: str
    image_model: str
    classifier: Classifier

    def grpc(self):
        return grpcclient.InferenceServerClient(self.server.grpc_url)

    def http(self, concurrency: int = 1):
        return httpclient.InferenceServerClient(self.server.http_url, concurrency=concurrency,
                                                connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def export_dir(random_export) -> Path:
    return random_export


@pytest.fixture(scope="module")
def served(export_dir, tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("served")
    repository = write_triton_repository(export_dir, root / "repo", backend="python", max_batch_size=16,
                                         max_queue_delay_us=2000)
    with LocalTritonServer(repository.path, log_file=root / "tritonserver.log") as server, \
            Classifier(export_dir / "model.onnx") as classifier:
        yield Served(server, repository.classifier.name, repository.image_model.name, classifier)


@pytest.fixture(scope="module")
def photos64() -> np.ndarray:
    """64 real photographs through the real preprocessing: the bundled ones and scikit-image's, and their
    mirror images."""
    files = sample_images() + sorted(SKIMAGE_DATA.glob("*.png")) + sorted(SKIMAGE_DATA.glob("*.jpg"))
    x = Preprocessor(PreprocessConfig.for_image_size(64)).batch(files)
    return np.ascontiguousarray(np.concatenate([x, x[..., ::-1], x[..., ::-1, :]])[:64])


def tensor_input(module, x: np.ndarray, name: str = "input", dtype: str = "FP32"):
    item = module.InferInput(name, list(x.shape), dtype)
    item.set_data_from_numpy(x)
    return item


def assert_logits_equal(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def batch_counts(served: Served) -> dict[int, int]:
    """How many batches of each size the classifier model has run, from the server's own statistics."""
    stats = served.grpc().get_inference_statistics(served.name, as_json=True)
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats["model_stats"][0].get("batch_stats", [])}


def grpc_concurrently(served: Served, model: str, inputs: list[list]) -> list:
    """Send every request at once (gRPC async); each result is an InferResult or an InferenceServerException."""
    results: list = [None] * len(inputs)
    done = threading.Semaphore(0)
    client = served.grpc()

    def callback(index, result, error):
        results[index] = error if error is not None else result
        done.release()

    for i, request in enumerate(inputs):
        client.async_infer(model, request, callback=lambda result, error, i=i: callback(i, result, error),
                           client_timeout=TIMEOUT_S)
    for _ in inputs:
        assert done.acquire(timeout=TIMEOUT_S * 2), "the server stopped answering"
    return results


def test_http_and_grpc_return_the_classifiers_logits(served, photos64):
    for x in (photos64[:5], photos64[5:6]):
        expected = served.classifier.logits(x)
        by_grpc = served.grpc().infer(served.name, [tensor_input(grpcclient, x)], client_timeout=TIMEOUT_S)
        by_http = served.http().infer(served.name, [tensor_input(httpclient, x)])
        assert_logits_equal(by_grpc.as_numpy("logits"), expected)
        assert_logits_equal(by_http.as_numpy("logits"), expected)


def test_64_concurrent_requests_are_exact_and_batched(served, photos64):
    expected = served.classifier.logits(photos64)
    before = batch_counts(served)
    by_grpc = grpc_concurrently(served, served.name, [[tensor_input(grpcclient, x[None])] for x in photos64])
    client = served.http(concurrency=64)
    pending = [client.async_infer(served.name, [tensor_input(httpclient, x[None])]) for x in photos64]
    by_http = [request.get_result(timeout=TIMEOUT_S) for request in pending]
    for i, (a, b) in enumerate(zip(by_grpc, by_http, strict=True)):
        assert_logits_equal(a.as_numpy("logits")[0], expected[i])
        assert_logits_equal(b.as_numpy("logits")[0], expected[i])
    after = batch_counts(served)
    new = {size: after[size] - before.get(size, 0) for size in after if after[size] > before.get(size, 0)}
    assert sum(size * count for size, count in new.items()) == 128  # every image, in batches of these sizes
    assert max(new) > 1, f"the dynamic batcher formed no batch: {new}"


def test_encoded_images_through_the_ensemble_with_labels(served):
    files = sample_images() + [SKIMAGE_DATA / "coffee.png"]
    for path in files:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)[None]
        expected = served.classifier.predict(path.read_bytes(), topk=5)
        for module, client in ((grpcclient, served.grpc()), (httpclient, served.http())):
            logits = client.infer(served.image_model, [tensor_input(module, data, "image", "UINT8")])
            assert_logits_equal(logits.as_numpy("logits")[0], served.classifier.logits(str(path))[0])
            top = client.infer(served.image_model, [tensor_input(module, data, "image", "UINT8")],
                               outputs=[module.InferRequestedOutput("logits", class_count=5)])
            entries = [entry.decode().split(":", 2) for entry in top.as_numpy("logits")[0]]
            assert [(int(i), label) for _, i, label in entries] == [(i, label) for i, label, _ in expected.topk]


def test_bad_requests_fail_alone_and_the_server_keeps_serving(served, photos64):
    client = served.grpc()
    with pytest.raises(InferenceServerException, match=r"unexpected shape for input 'input'.*\[1,3,32,32\]"):
        client.infer(served.name, [tensor_input(grpcclient, np.zeros((1, 3, 32, 32), np.float32))])
    with pytest.raises(InferenceServerException, match="data-type is 'FP64', but model 'smlpnet_test' expects"):
        client.infer(served.name, [tensor_input(grpcclient, photos64[:1].astype(np.float64), dtype="FP64")])
    with pytest.raises(InferenceServerException, match="image #0 of the request: not a readable image"):
        junk = np.frombuffer(b"GIF89a but not really an image", np.uint8)[None]
        served.http().infer(served.image_model, [tensor_input(httpclient, junk, "image", "UINT8")])

    # A NaN request among good ones, all at once: it gets its error and the batch it shared is still answered.
    inputs = photos64[:8].copy()
    inputs[3, 0, 5, 5] = np.nan
    results = grpc_concurrently(served, served.name, [[tensor_input(grpcclient, x[None])] for x in inputs])
    assert isinstance(results[3], InferenceServerException) and "NaN" in str(results[3])
    assert "INVALID_ARGUMENT" in str(results[3].status())
    good = [i for i in range(8) if i != 3]
    expected = served.classifier.logits(inputs[good])
    for row, i in enumerate(good):
        assert_logits_equal(results[i].as_numpy("logits")[0], expected[row])

    assert served.server.ready() and client.is_model_ready(served.name) and client.is_model_ready(served.image_model)
    again = client.infer(served.name, [tensor_input(grpcclient, photos64[:2])], client_timeout=TIMEOUT_S)
    assert_logits_equal(again.as_numpy("logits"), served.classifier.logits(photos64[:2]))


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_listens_on_loopback_only(served):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    for port in served.server.ports.values():
        addresses = listening_addresses(port)
        assert addresses and addresses <= loopback, (port, addresses)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_openvino_bf16_served_through_the_python_backend(export_dir, tmp_path, photos64):
    """The pip tritonserver has the Python backend only: OpenVINO runs there inside Classifier, in bf16."""
    pytest.importorskip("openvino", reason="needs OpenVINO (extra 'openvino')")
    from smlp_deploy.cpu import openvino_cpu_capabilities

    precision = "bf16" if "BF16" in openvino_cpu_capabilities() else "fp32"
    with pytest.warns(UserWarning, match="whose parity its export did not measure") if precision == "bf16" else \
            contextlib.nullcontext():
        repository = write_triton_repository(export_dir, tmp_path / "repo", backend="python", image_input=False,
                                             classifier_backend="openvino", precision=precision)
    x = photos64[:8]
    with LocalTritonServer(repository.path, log_file=tmp_path / "tritonserver.log") as server, \
            Classifier(export_dir / "model.onnx", backend="openvino", precision=precision) as classifier:
        got = httpclient.InferenceServerClient(server.http_url, network_timeout=TIMEOUT_S).infer(
            repository.classifier.name, [tensor_input(httpclient, x)]).as_numpy("logits")
        assert_logits_equal(got, classifier.logits(x))
    if precision == "bf16":  # bf16 for real, not FP32 under another name
        with Classifier(export_dir / "model.onnx") as fp32:
            assert np.abs(got - fp32.logits(x)).max() > 1e-4 * np.abs(got).max()


def test_a_model_that_cannot_load_stops_the_server_with_its_log(export_dir, tmp_path):
    repository = write_triton_repository(export_dir, tmp_path / "repo", backend="python", image_input=False)
    (repository.classifier.directory / "1" / "model.onnx").unlink()
    server = LocalTritonServer(repository.path, startup_timeout=TIMEOUT_S)
    with pytest.raises(BackendUnavailableError, match=r"(?s)exited with status 1 while loading.*model\.onnx"):
        server.start()
    assert server.process is None and not processes_mentioning(str(tmp_path))
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))


def read_until(process: subprocess.Popen, pattern: str, timeout: float) -> str:
    """The process's stdout up to the line matching ``pattern``, within ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    text, deadline = "", time.monotonic() + timeout
    while not re.search(pattern, text) and time.monotonic() < deadline and process.poll() is None:
        try:
            text += lines.get(timeout=0.5)
        except queue.Empty:
            pass
    assert re.search(pattern, text), f"no {pattern!r} in time; stdout:\n{text}"
    return text


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_smlp_serve_prints_urls_serves_and_stops_cleanly(export_dir, tmp_path, stop):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = CTRL_C_AS_IN_A_TERMINAL + "from smlp_deploy.cli.serve import entry_point; raise SystemExit(entry_point())"
    command = [sys.executable, "-c", run, str(export_dir), "--http-port", "0", "--grpc-port", "0",
               "--metrics-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(scratch)})
    try:
        banner = read_until(process, "Ctrl-C stops the server", timeout=120)
        grpc_url = re.search(r"gRPC +(\S+)", banner).group(1)
        assert re.search(r"HTTP +http://127\.0\.0\.1:\d+", banner) and grpc_url.startswith("127.0.0.1:")
        photo = sample_images()[1]
        data = np.frombuffer(photo.read_bytes(), dtype=np.uint8)[None]
        result = grpcclient.InferenceServerClient(grpc_url).infer(
            "smlpnet_test_image", [tensor_input(grpcclient, data, "image", "UINT8")], client_timeout=TIMEOUT_S)
        with Classifier(export_dir / "model.onnx") as classifier:
            assert_logits_equal(result.as_numpy("logits")[0], classifier.logits(str(photo))[0])
        process.send_signal(stop)
        assert process.wait(timeout=60) == 0
        assert process.stderr.read().strip().endswith("stopped")
    finally:
        if process.poll() is None:
            process.kill()  # the server, in its own session, gets SIGTERM when its parent dies
            process.wait()
        process.stderr.close()
    assert not processes_mentioning(str(scratch)), "a server process outlived smlp-serve"
    assert not list(Path("/dev/shm").glob(f"smlp_triton_{process.pid}_*")), "shared memory left behind"
    # ONNX Runtime (1.32) keeps a session id in $TMPDIR/.ses in any process that opens a model; it is not ours.
    assert not [p for p in scratch.iterdir() if p.name != ".ses"], "smlp-serve left files in its temporary folder"
