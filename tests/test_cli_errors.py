"""Every error a command can reach here speaks in the command's words (flags, commands), never in Python's
(``resume=True``, ``backend=``, ``smlp_deploy.export.export_model``); the same errors from the API still speak
Python. Each case is a real mistake on real files: a text file as a checkpoint, an existing output, a folder
named like no class, and so on; its expected fragment proves the error path was the one meant."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from smlp_deploy import Classifier, doctor
from smlp_deploy.batch.output import open_sink
from smlp_deploy.errors import SmlpDeployError
from smlp_deploy.evaluation import class_indices
from smlp_deploy.manifest import IMAGENET_LABELS
from smlp_deploy.models import create_model
from smlp_deploy.runtime import load_backend
from smlp_deploy.samples import sample_images
from smlp_deploy.serving import write_triton_repository
from smlp_deploy.tensorrt.flavours import TENSORRT

from .conftest import PYTHON_WORDS, ray_environment

SIZE = 64
COMMANDS = ("export", "predict", "eval", "bench", "compare", "debug", "triton", "serve", "doctor")


@pytest.fixture(scope="module")
def files(checkpoint_export, tmp_path_factory) -> dict[str, Path]:
    """Real files for real mistakes: an export and its checkpoint (conftest's), bad model files, image folders,
    outputs."""
    root = tmp_path_factory.mktemp("cli")
    export = checkpoint_export.export
    photos = root / "photos"
    photos.mkdir()
    for photo in sample_images()[:2]:
        shutil.copy(photo, photos)
    (root / "empty").mkdir()
    labeled = root / "labeled"
    for name, photo in (("tabby", sample_images()[1]), ("my cats", sample_images()[0])):
        (labeled / name).mkdir(parents=True)
        shutil.copy(photo, labeled / name)
    (root / "notes.pth").write_text("the weights are on the shared drive\n")
    (root / "notes.onnx").write_text("the model is on the shared drive\n")
    (root / "empty.plan").write_bytes(b"")
    (root / "model.bin").write_bytes(export.joinpath("model.onnx").read_bytes())
    with zipfile.ZipFile(root / "archive.pth", "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    unlisted = root / "unlisted"
    shutil.copytree(export, unlisted)
    shutil.copy(unlisted / "model.onnx", unlisted / "model.fp16.onnx")  # not made by that export
    (root / "ranges.json").write_text('{"ranges": []}')
    (root / "a-file").write_text("not a folder")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    write_triton_repository(export, root / "repository")
    open_sink(root / "done.jsonl", resume=False).close(discard_if_empty=False)
    return {"root": root, "export": export, "photos": photos, "empty": root / "empty", "labeled": labeled,
            "unlisted": unlisted, "weights": checkpoint_export.weights}


def case(command: str, *args: str, expect: str | tuple[str, ...], status: int = 2):
    """``expect``: a fragment of the error, or several that must all be in it."""
    expect = (expect,) if isinstance(expect, str) else expect
    return pytest.param(command, args, expect, status, id=f"{command} {' '.join(args)}"[:80])


# {name} is a path from the fixture: {export}, {photos}, ...; {root}/x is a file under the fixture's root.
CASES = [
    case("export", "--variant", "test", "--image-size", "64", "--checkpoint", "{root}/notes.pth",
         expect="is not a PyTorch checkpoint: it is text"),
    case("export", "--variant", "test", "--image-size", "64", "--checkpoint", "{root}/archive.pth",
         expect="is not a PyTorch checkpoint: it is a zip archive (notes.txt)"),
    case("export", "--variant", "test", "--checkpoint", "{root}/missing.pth", expect="does not exist"),
    case("export", "--variant", "tiny", "--image-size", "64", "--checkpoint", "{weights}", expect="use --variant test"),
    case("export", "--variant", "test", "--image-size", "96", "--checkpoint", "{weights}",
         expect="use --image-size 64"),
    case("export", "--variant", "test", "--image-size", "64", "--num-classes", "10", "--checkpoint", "{weights}",
         expect="use --num-classes 1000"),
    case("export", "--variant", "test", "--image-size", "65", expect="--image-size: image size 65 is not supported"),
    case("export", "--variant", "test", "--opset", "15", expect="--opset: opset 15 is too old"),
    case("export", "--variant", "test", "--int8", "--calib-dir", "{root}/nowhere",
         expect="--calib-dir: calibration folder '{root}/nowhere' does not exist"),
    case("export", "--variant", "test", "--int8", "--calib-dir", "{root}/a-file", expect="is a file, not a folder"),
    case("export", "--variant", "test", "--int8", "--calib-dir", "{empty}", expect="holds no images"),
    case("export", "--variant", "test", "--int8", "--calib-dir", "{photos}", "--calib-cache", "{root}/ranges.json",
         "--out", "{root}/new-export", expect="--calib-cache: calibration cache"),
    case("export", "--variant", "test", "--out", "{root}/a-file", expect="--out: export folder"),
    case("export", "--variant", "test", "--out", "{root}/foreign", expect="holds files that are not part of an export"),
    case("export", "--from-onnx", "{empty}",
         expect="--from-onnx: {empty} is not an export folder: it has no manifest.json (make one with smlp-export)"),
    case("export", "--variant", "test", "--image-size", "64", "--eval-dir", "{root}/nowhere",
         expect="labeled image folder '{root}/nowhere' does not exist"),
    case("export", "--variant", "test", "--image-size", "64", "--eval-dir", "{labeled}", "--out", "{root}/eval-export",
         expect="1 folder matches no class: my cats. Rename them"),
    case("predict", "{root}/notes.pth", "{photos}", expect="is not a PyTorch checkpoint: it is text"),
    case("predict", "{root}/notes.onnx", "{photos}", expect="is not an ONNX model: it is text"),
    case("predict", "{root}/empty.plan", "{photos}", expect="Expected an engine built by smlp-export"),
    case("predict", "{export}", "{photos}", expect="is a directory, not a model file; pass one of its files"),
    case("predict", "{root}/missing.onnx", "{photos}", expect="does not exist"),
    case("predict", "{root}/model.bin", "{photos}", expect="or pass one of --backend onnxruntime, --backend "),
    case("predict", "{export}/model.onnx", "{photos}", "--backend", "torch", expect="--backend: backend 'torch'"),
    case("predict", "{unlisted}/model.fp16.onnx", "{photos}", expect="pass --allow-unlisted to load it anyway"),
    case("predict", "{export}/model.onnx", "{photos}", "--device", "cuda", expect="machine with an NVIDIA GPU, or pass "
         "--device cpu"),
    case("predict", "{export}/model.onnx", "{empty}", expect="IMAGES: no images to classify: folder"),
    case("predict", "{export}/model.onnx", "{root}/missing.jpg", expect="no images to classify: image"),
    case("predict", "{export}/model.onnx", "{photos}", "--ray", "--output", "{root}/done.jsonl",
         expect="--output: output '{root}/done.jsonl' already exists: pass --resume"),
    case("predict", "{export}/model.onnx", "{photos}", "--ray", "--output", "{root}/out.txt",
         expect="--output: output '{root}/out.txt' must end in"),
    case("predict", "{export}/model.onnx", "{photos}/chelsea.jpg", "--ray", "--output", "{root}/out.jsonl",
         expect="is one image: pass a folder of images or a text file listing image paths (one per line)"),
    case("predict", "{export}/model.onnx", "{photos}", "--ray", "--output", "{root}/out.jsonl",
         "--gpus-per-replica", "-1", expect=("--gpus-per-replica: ", "must be a number >= 0, got -1.0")),
    case("eval", "{export}/model.onnx", "--data", "{root}/nowhere", expect="--data: labeled image folder"),
    case("eval", "{export}/model.onnx", "--data", "{empty}",
         expect="--data: labeled image folder '{empty}' has no images"),
    case("eval", "{export}/model.onnx", "--data", "{labeled}", "--quiet",
         expect="1 folder matches no class: my cats. Rename them, or map folders in sorted order to outputs 0, 1, "
                "... (--sorted-classes)"),
    case("eval", "{root}/notes.onnx", "--data", "{labeled}", expect="is not an ONNX model"),
    case("eval", "{unlisted}/model.fp16.onnx", "--data", "{labeled}", expect="pass --allow-unlisted"),
    case("bench", "--artifacts", "{empty}", expect="--artifacts: '{empty}' is not an export directory"),
    case("bench", "--artifacts", "{export}", "--backends", "torch,onnx", expect="--backends: backends must be among"),
    case("bench", "--artifacts", "{export}", "--precision", "fp64", expect="--precision: precisions must be among"),
    case("bench", "--artifacts", "{export}", "--batch-sizes", "0",
         expect="--batch-sizes: batch sizes must be positive integers"),
    case("triton", "{empty}", "--out", "{root}/repo2", expect="has no manifest.json (make one with smlp-export)"),
    case("triton", "{export}", "--out", "{root}/repository", expect="pass --overwrite to replace them"),
    case("triton", "{export}", "--out", "{root}/repo3", "--tensorrt-accelerator",
         expect="with --device gpu (got model.onnx, device unset)"),
    case("triton", "{export}", "--out", "{root}/repo3", "--name", "bad name", expect="--name: model name"),
    case("triton", "{export}", "--out", "{root}/repo3", "--artifact", "model.fp16.onnx",
         expect="--artifact: model.fp16.onnx is not part of the export"),
    case("serve", "{empty}", expect="has no manifest.json (make one with smlp-export)"),
    case("serve", "{export}", "--name", "bad name", expect="--name: model name"),
    case("export", "--variant", "test", "--image-size", "64", "--int8", "--calib-dir", "{photos}", "--max-top1-drop",
         "0.5", "--out", "{root}/budget", expect="--max-top1-drop: a top-1 drop is judged on a labeled folder: pass "
         "--eval-dir DIR"),
    case("export", "--variant", "test", "--image-size", "64", "--int8", "--calib-dir", "{photos}", "--min-agreement",
         "99", "--holdout-dir", "{root}/missing", "--out", "{root}/budget",
         expect="--holdout-dir: held-out folder '{root}/missing' does not exist"),
    case("debug", "layers", "{empty}", "model.int8.onnx", "{photos}", expect="EXPORT_DIR: {empty} is not an export "
         "folder (no manifest.json): export to it with smlp-export"),
    case("debug", "layers", "{export}", "model.int8.onnx", "{photos}",
         expect="ARTIFACT: 'model.int8.onnx' is not a reduced-precision ONNX artifact in {export}"),
    case("compare", "{empty}", "--data", "{labeled}", expect="EXPORT_DIR: '{empty}' is not an export folder"),
    case("compare", "{export}", "--data", "{empty}", expect="--data: labeled image folder '{empty}' has no images"),
]


# An optional dependency a flag needs, missing: the command stops before any work. Each case runs in one child
# process where the libraries cannot be imported (sys.modules[name] = None, as Python reads an import it must not
# make) and, for smlp-serve, where no tritonserver is (sys.prefix an empty folder, no pytriton). An audit hook
# records every file the command opens and every folder it lists or makes under the test's folders (TMPDIR too):
# there must be none, so no image was listed, no model or manifest read, no export begun, no output written.
MISSING = [
    ("bench", ("--variant", "test", "--backends", "onnxruntime", "--batch-sizes", "1", "--plot", "{root}/bench.png"),
     "--plot: cannot import matplotlib (", "pip install 'smlp-deploy[bench]'"),
    ("compare", ("{export}", "--data", "{labeled}", "--plot", "{root}/choice.png"),
     "--plot: cannot import matplotlib (", "pip install 'smlp-deploy[bench]'"),
    ("debug", ("layers", "{export}", "model.int8.onnx", "{photos}", "--plot", "{root}/layers.png"),
     "--plot: cannot import matplotlib (", "pip install 'smlp-deploy[bench]'"),
    ("bench", ("--artifacts", "{export}", "--backends", "onnxruntime,openvino", "--batch-sizes", "1"),
     "--backends: backend 'openvino' cannot run here: cannot import openvino", "pip install 'smlp-deploy[openvino]'"),
    ("bench", ("--artifacts", "{export}", "--backends", "openvino-direct", "--batch-sizes", "1"),
     "--backends: backend 'openvino' cannot run here", "pip install 'smlp-deploy[openvino]'"),
    ("predict", ("{export}/model.onnx", "{photos}", "--backend", "openvino"),
     "--backend: backend 'openvino' cannot run here", "pip install 'smlp-deploy[openvino]'"),
    ("predict", ("{export}/model.onnx", "{photos}", "--ray", "--output", "{root}/ray.jsonl"),
     "--ray: cannot import ray (", "pip install 'smlp-deploy[ray]'"),
    ("eval", ("{export}/model.onnx", "--data", "{labeled}", "--backend", "openvino"),
     "--backend: backend 'openvino' cannot run here", "pip install 'smlp-deploy[openvino]'"),
    ("serve", ("{export}", "--backend", "openvino"), "--backend: backend 'openvino' cannot run here",
     "pip install 'smlp-deploy[openvino]'"),
    ("serve", ("{export}",), "error: no tritonserver: nvidia-pytriton is not installed",
     "pip install --no-deps --target {nowhere}/tritonserver nvidia-pytriton"),
]
CHILD = """
import contextlib, importlib, io, json, sys
from pathlib import Path
for name in ("matplotlib", "ray", "openvino", "pytriton"):
    sys.modules[name] = None
watched, cases, results = sys.argv[1], json.loads(sys.argv[2]), []
touched = []
sys.addaudithook(lambda event, args: touched.append(f"{event} {args[0]}") if event in (
    "open", "os.listdir", "os.scandir", "os.mkdir") and str(args[0]).startswith(watched) else None)
for command, argv, prefix in cases:
    sys.prefix = prefix  # where smlp-serve looks for its tritonserver first
    sys.argv, err, touched[:] = [f"smlp-{command}", *argv], io.StringIO(), []
    with contextlib.redirect_stderr(err):
        status = importlib.import_module(f"smlp_deploy.cli.{command}").entry_point()
    results.append({"status": status, "err": err.getvalue(), "touched": list(touched)})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def without_extras(files, tmp_path_factory) -> list[dict]:
    """Every MISSING case, run in one child process (one start of Python and torch, not eight)."""
    base = tmp_path_factory.getbasetemp()
    files = {**files, "nowhere": tmp_path_factory.mktemp("no-prefix")}
    scratch = tmp_path_factory.mktemp("scratch")
    cases = [(command, [arg.format(**files) for arg in args],
              str(files["nowhere"]) if "tritonserver" in install else sys.prefix)
             for command, args, _, install in MISSING]
    done = subprocess.run([sys.executable, "-c", CHILD, str(base), json.dumps(cases)], check=False,
                          capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)}, timeout=300)
    assert done.returncode == 0, done.stderr
    return [{**result, "files": files} for result in json.loads(done.stdout.splitlines()[-1])]


@pytest.mark.parametrize("index", range(len(MISSING)), ids=[f"{c} {' '.join(a)}"[:60] for c, a, *_ in MISSING])
def test_a_missing_extra_stops_the_command_before_any_work(index, without_extras):
    """The flag's library (or smlp-serve's tritonserver) is missing: one line naming the flag and the install,
    exit status 2, and nothing under the test's folders opened, listed or made."""
    _, _, expect, install = MISSING[index]
    result = without_extras[index]
    err = result["err"]
    assert result["status"] == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expect in err and install.format(**result["files"]) in err, err
    assert not PYTHON_WORDS.findall(err), err
    assert result["touched"] == [], result["touched"]


def run(command: str, args: tuple[str, ...], files: dict[str, Path], monkeypatch, capsys) -> tuple[int, str]:
    argv = [arg.format(**files) for arg in args]
    monkeypatch.setattr("sys.argv", [f"smlp-{command}", *argv])
    status = importlib.import_module(f"smlp_deploy.cli.{command}").entry_point()
    return status, capsys.readouterr().err


@pytest.mark.parametrize("command, args, expect, status", CASES)
def test_command_errors_speak_the_commands_words(command, args, expect, status, files, monkeypatch, capsys):
    code, err = run(command, args, files, monkeypatch, capsys)
    assert code == status and "error: " in err and all(e.format(**files) in err for e in expect), err
    assert not PYTHON_WORDS.findall(err), err
    assert "Traceback" not in err


@pytest.mark.skipif(TENSORRT.build_unavailable() is None, reason="TensorRT can build engines here")
def test_a_flavour_that_cannot_build_here_says_why(files, monkeypatch, capsys):
    code, err = run("export", ("--variant", "test", "--image-size", "64", "--flavour", "tensorrt"), files,
                    monkeypatch, capsys)
    assert code == 2 and "--flavour: cannot build TensorRT engines here" in err, err
    assert not PYTHON_WORDS.findall(err), err


def test_doctor_require_names_what_is_missing(files, monkeypatch, capsys):
    """Where TensorRT cannot run engines, --require fails naming that capability (export-onnx is ready wherever
    this suite runs); where it can, it passes silently."""
    ready = doctor().capability("run-engines-tensorrt").ready
    code, err = run("doctor", ("--require", "export-onnx,run-engines-tensorrt"), files, monkeypatch, capsys)
    assert code == (0 if ready else 1) and not PYTHON_WORDS.findall(err), err
    assert ("not ready: run TensorRT engines (run-engines-tensorrt): " in err) != ready and "export-onnx" not in err


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")
def test_ray_resources_are_named_by_their_flags(files, monkeypatch, capsys, tmp_path):
    """Checked on the local Ray once it runs (conftest's ray_environment)."""
    with ray_environment():
        code, err = run("predict", ("{export}/model.onnx", "{photos}", "--ray", "--output", str(tmp_path / "o.jsonl"),
                                    "--replicas", "64", "--cpus-per-replica", "1"), files, monkeypatch, capsys)
    assert code == 2 and "--cpus-per-replica: --replicas 64 x --cpus-per-replica 1.0 needs 64 CPUs" in err, err
    assert not PYTHON_WORDS.findall(err), err


def test_the_api_speaks_python(files, tmp_path):
    """The same mistakes through the API: the hints name parameters and functions."""
    calls = [
        (lambda: open_sink(files["root"] / "done.jsonl", resume=False), "pass resume=True"),
        (lambda: write_triton_repository(files["export"], files["root"] / "repository"), "pass overwrite=True"),
        (lambda: write_triton_repository(files["empty"], tmp_path / "r"), "make one with smlp_deploy.export.export_"),
        (lambda: Classifier(files["unlisted"] / "model.fp16.onnx"), "pass allow_unlisted=True"),
        (lambda: load_backend(files["root"] / "model.bin"), "or pass one of backend='onnxruntime', backend="),
        (lambda: class_indices(["my cats"], IMAGENET_LABELS, 1000), "(sorted_order=True)"),
        (lambda: create_model("test", image_size=SIZE, num_classes=10, checkpoint=files["weights"]),
         "use num_classes=1000"),
        (lambda: Classifier(files["root"] / "empty.plan"), "built by smlp_deploy.export.export_model"),
    ]
    for call, words in calls:
        with pytest.raises(SmlpDeployError) as info:
            call()
        assert words in str(info.value), str(info.value)


def test_every_default_is_in_the_help():
    """An option with a default says it in its --help line (store_true and store_false flags need not)."""
    for command in COMMANDS:
        for action in importlib.import_module(f"smlp_deploy.cli.{command}").parser()._actions:
            if action.option_strings and action.default not in (None, False, True, (), argparse.SUPPRESS):
                assert "default" in (action.help or ""), f"smlp-{command} {action.option_strings[0]}"
