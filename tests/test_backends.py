"""Backends tell the truth about where they run: a device a backend does not take is an error naming the ones it
does; ONNX Runtime's choice of provider is made from its own provider list (tested with one that offers CUDA) and
read back from its session; backends close as context managers, and a Classifier that fails after loading its
backend closes it; an ONNX Runtime session holds one batch's memory per input shape, not two."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smlp_deploy import Classifier
from smlp_deploy.errors import ArtifactError, BackendUnavailableError, InputError
from smlp_deploy.manifest import MANIFEST_NAME
from smlp_deploy.models import create_model
from smlp_deploy.runtime import classifier as classifier_module
from smlp_deploy.runtime import load_backend
from smlp_deploy.runtime.backends.onnxruntime_backend import CPU, CUDA, available_providers, execution_providers
from smlp_deploy.runtime.backends.registry import BACKENDS

WITH_CUDA = [CUDA, CPU]  # what onnxruntime-gpu offers on a GPU host
SIZE = 64


@pytest.fixture(scope="module")
def export_dir(random_export) -> Path:
    return random_export


@pytest.fixture(scope="module")
def lone_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint with no export beside it."""
    path = tmp_path_factory.mktemp("backends") / "model.pt"
    torch.save(create_model("test", image_size=SIZE).state_dict(), path)
    return path


@pytest.mark.parametrize("device, expected", [
    (None, [CUDA, CPU]),
    ("cpu", [CPU]),
    ("cuda", [(CUDA, {"device_id": "0"}), CPU]),
    ("cuda:1", [(CUDA, {"device_id": "1"}), CPU]),
])
def test_onnxruntime_providers_where_cuda_is_offered(device, expected):
    assert execution_providers(device, WITH_CUDA) == expected


@pytest.mark.parametrize("device", ["gpu", "banana", "cuda:", "cuda:x", "cpu:1", "CUDA", "", "cuda:1:2"])
def test_an_unknown_device_names_the_devices_the_backend_takes(device):
    for available in (WITH_CUDA, [CPU]):
        with pytest.raises(InputError, match=f"device {device!r} is not one backend 'onnxruntime' runs on: it "
                                             "takes cpu, cuda, cuda:N") as error:
            execution_providers(device, available)
        assert error.value.parameter == "device"


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_where_onnxruntime_offers_none_names_the_devices_there(device):
    with pytest.raises(BackendUnavailableError, match=rf"device {device!r} asked for, but this onnxruntime runs on "
                                                      r"the CPU only \(its providers: .*; devices: cpu\): install "
                                                      r"onnxruntime-gpu") as error:
        execution_providers(device, [CPU])
    assert error.value.parameter == "device"


def test_what_a_session_runs_on_is_read_back_from_it(export_dir):
    with load_backend(export_dir / "model.onnx") as default, load_backend(export_dir / "model.onnx", device="cpu") \
            as cpu:
        assert cpu.device == "cpu" and cpu.provider == CPU
        assert default.device == ("cuda:0" if default.provider == CUDA else "cpu")
        if CUDA not in available_providers():
            assert default.provider == CPU


@pytest.mark.parametrize("name, backend", [("model.onnx", "onnxruntime"), ("model.pt", "torch")])
@pytest.mark.parametrize("device", ["banana", "gpu", "cuda:one"])
def test_every_backend_refuses_a_device_it_does_not_take_before_loading(export_dir, lone_checkpoint, name, backend,
                                                                        device):
    """Each file's own backend refuses it: an exported ONNX model and a lone checkpoint."""
    path = export_dir / name if name == "model.onnx" else lone_checkpoint
    with pytest.raises(InputError, match=f"device {device!r} is not one backend {backend!r} runs on: it "
                                         "takes cpu, cuda, cuda:N") as error:
        Classifier(path, device=device)
    assert error.value.parameter == "device"


def test_the_registry_says_which_devices_each_backend_takes():
    assert BACKENDS["onnxruntime"].devices == ("cpu", "cuda") and BACKENDS["openvino"].devices == ("cpu",)
    assert all(b.devices == ("cuda",) for b in BACKENDS.values() if b.name.startswith("tensorrt"))


def test_a_backend_is_a_context_manager_and_refuses_to_run_once_closed(export_dir):
    batch = np.zeros((1, 3, SIZE, SIZE), np.float32)
    with load_backend(export_dir / "model.onnx") as backend:
        assert backend.run(batch).shape == (1, 1000) and not backend.closed
    assert backend.closed
    with pytest.raises(InputError, match=r"model\.onnx was closed: open it again"):
        backend.run(batch)


def test_a_classifier_that_fails_after_loading_closes_its_backend(export_dir, tmp_path, monkeypatch):
    """Its manifest lists 10 labels for a model of 1000 outputs: the Classifier fails after opening the file."""
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["labels"] = [str(i) for i in range(10)]
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    opened = []

    def load_and_keep(*args, **kwargs):
        opened.append(load_backend(*args, **kwargs))  # the real loader; the test only keeps what it returned
        return opened[-1]

    monkeypatch.setattr(classifier_module, "load_backend", load_and_keep)
    with pytest.raises(ArtifactError, match="has 1000 outputs but its manifest lists 10 labels"):
        Classifier(copy / "model.onnx")
    (backend,) = opened
    assert backend.closed and backend.session is None


def test_closing_a_torch_backend_lets_its_model_go(export_dir):
    """The model (and on a GPU its memory) goes with close(), not with the backend object."""
    import gc
    import weakref

    from smlp_deploy.runtime.backends import TorchBackend

    model = create_model("test", image_size=SIZE)
    backend, kept = TorchBackend(model, device="cpu"), weakref.ref(model)
    del model
    backend.close()
    gc.collect()
    assert kept() is None and backend.closed
    assert "torch" in backend.describe()


def test_close_while_another_thread_runs_is_refused_then_done(export_dir):
    """A close during a call on another thread is refused with a clear error (never a session pulled from under
    the call); once the calls return it closes, and the next call is told so."""
    import threading

    backend = load_backend(export_dir / "model.onnx")
    batch = np.zeros((64, 3, SIZE, SIZE), np.float32)
    backend.run(batch)
    running, outcomes = threading.Event(), []

    def calls() -> None:
        try:
            while True:
                running.set()
                backend.run(batch)
        except Exception as exc:  # the test looks at whatever ended the calls
            outcomes.append(exc)

    worker = threading.Thread(target=calls)
    worker.start()
    running.wait()
    refused = 0
    while True:
        try:
            backend.close()
            break
        except InputError as exc:
            assert str(exc) == ("model.onnx cannot be closed while 1 call(s) run on other threads: close it once they "
                                "have returned")
            refused += 1
    worker.join(timeout=60)
    assert refused >= 1 and backend.closed
    assert [type(e) for e in outcomes] == [InputError]
    assert str(outcomes[0]) == "model.onnx was closed: open it again to run it"


# A child process of its own, so its RSS is the session's: the RSS after loading, the peak of the first call at
# batch 32 (VmHWM, reset after loading), and the RSS after four calls.
HELD = """
import json, re, sys
from pathlib import Path
import numpy as np
from smlp_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
def field(name):
    return int(re.search(name + r":\\s+(\\d+)", Path("/proc/self/status").read_text())[1]) / 1024
backend = OnnxRuntimeBackend(sys.argv[1], device="cpu")
batch = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
loaded = field("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
backend.run(batch)
first = field("VmHWM")
for _ in range(3):
    backend.run(batch)
print(json.dumps([loaded, first, field("VmRSS")]))
"""


@pytest.mark.xdist_group("tiny")
def test_an_onnxruntime_session_holds_one_batch_of_memory_per_shape(every_precision_tiny):
    """ONNX Runtime plans a shape's memory from its first run and gives the later runs a block of their own; its CPU
    arena kept the first run's memory as well, so a session held two batches' worth (sMLPNet-T at batch 32: 1575
    MiB against 985 MiB once the first run's is returned, docs/benchmarks/bench-memory-arena.json)."""
    model = every_precision_tiny.out_dir / "model.onnx"
    done = subprocess.run([sys.executable, "-c", HELD, str(model)], check=True, capture_output=True, text=True)
    loaded, first, held = json.loads(done.stdout)
    assert held - loaded < 1.5 * (first - loaded), (loaded, first, held)
