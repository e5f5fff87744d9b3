"""Every model file that is not what its suffix says gets the toolkit's error, naming the file and what it is.

As tests/test_inputs.py does for images: real files written to disk (text, empty, random bytes, a zip that is no
torch archive, a real export cut in half, another format under the suffix), opened the way users open them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from smlp_deploy import Classifier
from smlp_deploy.errors import ArtifactError, CheckpointError
from smlp_deploy.models import create_model
from smlp_deploy.tensorrt.flavours import FLAVOURS

SIZE = 64
NOT_A = {".pth": "is not a PyTorch checkpoint", ".pt": "is not a PyTorch checkpoint",
         ".onnx": "is not an ONNX model", ".plan": "is not a TensorRT engine"}
DAMAGED = {".pth": "cannot be read: it is truncated or damaged", ".pt": "cannot be read: it is truncated or damaged",
           ".onnx": "cannot be loaded by onnxruntime: Protobuf parsing failed. It is truncated or damaged"}


@pytest.fixture(scope="module")
def real(checkpoint_export) -> dict[str, Path]:
    """A real file of each kind: a checkpoint as torch.save writes it, and its export's ONNX model (conftest's)."""
    weights, export = checkpoint_export
    return {".pth": weights, ".pt": weights, ".onnx": export / "model.onnx"}


def write(kind: str, suffix: str, folder: Path, real: dict[str, Path]) -> Path:
    path = folder / f"{kind}{suffix}"
    if kind == "text":
        path.write_text("model weights are on the shared drive\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a checkpoint")
    elif kind == "truncated":
        data = real[suffix].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # foreign: a real file of another kind under this suffix
        path.write_bytes(real[".onnx" if suffix != ".onnx" else ".pth"].read_bytes())
    return path


# What each generated file is called, in the message that refuses it.
WORDS = {"text": "it is text ('model weights are on the shared drive')", "empty": "it is empty (0 bytes)",
         "random": "it is binary data of no format known here", "zip": "it is a zip archive (notes.txt)"}


def refused(suffix: str) -> dict[str, str]:
    """The message that refuses each generated file under ``suffix`` by what it is."""
    return {kind: f"{NOT_A[suffix]}: {words}" for kind, words in WORDS.items()}


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
@pytest.mark.parametrize("kind", ["text", "empty", "random", "zip", "truncated", "foreign"])
def test_checkpoints(kind, suffix, tmp_path, real):
    path = write(kind, suffix, tmp_path, real)
    expected = {**refused(suffix), "truncated": DAMAGED[suffix],
                "foreign": f"{NOT_A[suffix]}: it is an ONNX model"}[kind]
    for load in (lambda: create_model("test", image_size=SIZE, checkpoint=path), lambda: Classifier(path)):
        with pytest.raises(CheckpointError) as info:
            load()
        assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


def test_a_pickle_cut_short_is_damaged_not_forbidden(tmp_path):
    """Bytes past a pickle's header that are no opcode: damage, not an object refused for safety."""
    path = tmp_path / "cut.pth"
    path.write_bytes(b"\x80\x02" + np.random.default_rng(1).bytes(300))
    with pytest.raises(CheckpointError, match=r"truncated or damaged \(Unsupported operand \d+\)"):
        create_model("test", image_size=SIZE, checkpoint=path)


@pytest.mark.parametrize("kind", ["text", "empty", "random", "zip", "truncated", "foreign"])
def test_onnx_models(kind, tmp_path, real):
    path = write(kind, ".onnx", tmp_path, real)
    expected = {**refused(".onnx"), "truncated": DAMAGED[".onnx"], "random": DAMAGED[".onnx"],
                "foreign": f"{NOT_A['.onnx']}: it is a PyTorch checkpoint"}[kind]
    with pytest.raises(ArtifactError) as info:
        Classifier(path)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)
    assert str(info.value).count(str(path)) == 1  # ONNX Runtime's own text repeats the path


@pytest.mark.parametrize("kind", ["text", "empty", "zip", "foreign"])
def test_engines_refused_before_tensorrt(kind, tmp_path, real):
    """Refused by the file check, with or without TensorRT and a GPU here."""
    path = write(kind, ".plan", tmp_path, real)
    expected = {**refused(".plan"), "foreign": f"{NOT_A['.plan']}: it is an ONNX model"}[kind]
    with pytest.raises(ArtifactError) as info:
        Classifier(path)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


@pytest.mark.parametrize("size, words", [(30, "30 bytes, too few for an engine's header"),
                                         (4096, "binary data beginning with")])
def test_engine_of_random_bytes_is_refused_by_its_header(tmp_path, size, words):
    """Every TensorRT engine begins with its flavour's magic tag: random bytes are refused before any library or
    GPU is asked, on every machine."""
    path = tmp_path / "random.plan"
    path.write_bytes(np.random.default_rng(2).bytes(size))
    with pytest.raises(ArtifactError, match=f"is not a TensorRT engine: it is {words}") as info:
        Classifier(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("flavour", [pytest.param(f, marks=pytest.mark.tensorrt(f.name), id=f.name)
                                     for f in FLAVOURS.values()])
def test_engine_cut_in_half(random_export, tmp_path, flavour):
    """Its header intact, the rest missing: the library refuses it on the GPU (TensorRT when deserializing, TensorRT
    for RTX already when asked whether the engine is valid)."""
    data = (random_export / f"engine.fp32{flavour.engine_suffix}").read_bytes()
    path = tmp_path / f"cut{flavour.engine_suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match={"tensorrt": "cannot load engine", "tensorrt-rtx": "cannot run"}[
            flavour.name]) as info:
        Classifier(path)
    assert str(path) in str(info.value)
