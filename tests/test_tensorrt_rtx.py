"""TensorRT for RTX, for real: its ahead-of-time builder needs no GPU, so every engine the export plans is built
here, in CI, and checked whole; what only a GPU can show (running them) carries the ``tensorrt`` marker."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from smlp_deploy import Classifier
from smlp_deploy.artifacts import ARTIFACTS, engine_kind, onnx_artifact, runs_precision
from smlp_deploy.calibration.options import Fp8Options
from smlp_deploy.cli.export import entry_point
from smlp_deploy.errors import ArtifactError, BackendUnavailableError, InputError, SmlpDeployError
from smlp_deploy.export import BuildOptions, build_from_onnx, export_model
from smlp_deploy.fileio import sha256_file
from smlp_deploy.manifest import UNVERIFIED, Manifest
from smlp_deploy.runtime.backends import load_backend
from smlp_deploy.samples import sample_images
from smlp_deploy.tensorrt.builder import build_engine
from smlp_deploy.tensorrt.flavours import TENSORRT, TENSORRT_RTX, current_compute_capability, import_tensorrt

from .conftest import ENGINE_PROFILE
from .reliability import CTRL_C_AS_IN_A_TERMINAL, ROOT, export_command, interrupt_export, snapshot

pytestmark = pytest.mark.skipif(TENSORRT_RTX.missing() is not None, reason=f"needs {TENSORRT_RTX.missing()}")

CALIB = sample_images()[0].parent
SIZES = {"test": 64, "tiny": 224}
PRECISIONS = ("fp32", "fp16", "int8", "fp8")
LIBRARY_TARGETS = ["8.0", "8.6", "8.9", "12.0", "12.1"]  # tensorrt_rtx 1.7's own set (7.5 only on request)
FP8_TARGETS = ["8.9", "12.0", "12.1"]  # those of them with FP8


def source_of(precision: str):
    """The ONNX file an engine of ``precision`` is built from: the TensorRT form of the quantized ones."""
    return onnx_artifact(precision, "tensorrt" if precision in ("int8", "fp8") else None)


@pytest.fixture(scope="module", params=["test", pytest.param("tiny", marks=pytest.mark.xdist_group("tiny"))])
def exported(request):
    """An export of every precision with the default flavours (conftest's every_precision): TensorRT for RTX builds
    here, TensorRT is skipped."""
    variant = request.param
    result = request.getfixturevalue("every_precision_64" if variant == "test" else "every_precision_tiny")
    return variant, result.out_dir, result.manifest


def test_every_onnx_artifact_parses_with_no_error(exported):
    _, out, _ = exported
    api = import_tensorrt(TENSORRT_RTX)
    logger = api.Logger(api.Logger.ERROR)
    for precision in PRECISIONS:
        kind = source_of(precision)
        network = api.Builder(logger).create_network(1 << int(api.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = api.OnnxParser(network, logger)
        assert parser.parse_from_file(str(out / kind.file_name)) and parser.num_errors == 0, kind.file_name


def test_every_engine_is_built_and_listed_whole(exported):
    _, out, manifest = exported
    for precision in PRECISIONS:
        kind = engine_kind(source_of(precision), TENSORRT_RTX)
        record = manifest.artifact(kind.file_name)
        path = out / kind.file_name
        assert record is not None and path.read_bytes()[:4] == b"vtrt", kind.file_name
        assert (record.sha256, record.bytes) == (sha256_file(path), path.stat().st_size)
        assert (record.format, record.flavour, record.precision) == ("tensorrt-rtx", "tensorrt-rtx", precision)
        assert record.status == UNVERIFIED and record.parity is None and record.gpu is None
        # An FP8 engine is built for, and says it runs on, the compute capabilities with FP8 only.
        assert record.compute_capabilities == (FP8_TARGETS if precision == "fp8" else LIBRARY_TARGETS)
        assert record.tensorrt_version == TENSORRT_RTX.version()
        assert record.profile == ENGINE_PROFILE and record.build_seconds > 0
    for precision in ("int8", "fp8"):
        assert manifest.artifact(f"model.{precision}.onnx").float_precision == manifest.artifact(
            f"engine.{precision}.rtx.plan").float_precision == "fp16"
    rtx, trt = manifest.engine_status("tensorrt-rtx"), manifest.engine_status("tensorrt")
    assert rtx.status == "built" and "not yet verified on a GPU" in rtx.reason
    assert "for compute capability 8.0, 8.6, 8.9, 12.0, 12.1 (FP8: 8.9, 12.0, 12.1)" in rtx.reason
    assert rtx.commands[0] == "smlp-export --verify-engines ."
    assert rtx.engines == ["engine.fp32.rtx.plan", "engine.fp16.rtx.plan", "engine.int8.rtx.plan",
                           "engine.fp8.rtx.plan"]
    if TENSORRT.build_unavailable():
        assert trt.status == "skipped" and trt.reason == TENSORRT.build_unavailable()
        assert not any((out / name).exists() for name in trt.engines)
    # The manifest on disk says the same, and reads back typed.
    assert Manifest.load(out / "manifest.json") == manifest


def test_an_fp16_engine_is_about_half_an_fp32_one(exported):
    variant, out, _ = exported
    fp32, fp16 = ((out / f"engine.{p}.rtx.plan").stat().st_size for p in ("fp32", "fp16"))
    if variant == "test":
        assert fp16 < fp32  # 0.3M weights: the engine's fixed part dominates
    else:
        assert 0.45 < fp16 / fp32 < 0.6, (fp16, fp32)


def _custom_op_model(path):
    node = helper.make_node("MyOp", ["input"], ["logits"], name="custom0", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))


def test_a_graph_with_an_op_tensorrt_lacks_gives_the_parser_message(tmp_path):
    _custom_op_model(tmp_path / "model.onnx")
    with pytest.raises(ArtifactError) as error:
        build_engine(TENSORRT_RTX, tmp_path / "model.onnx", tmp_path / "engine.rtx.plan", 8, BuildOptions())
    message = str(error.value)
    assert "TensorRT for RTX's ONNX parser rejected model.onnx" in message
    assert "MyOp node 'custom0'" in message and "Plugin not found" in message and "INVALID_NODE" in message
    assert not (tmp_path / "engine.rtx.plan").exists()


# An earlier builder, in a reference cycle, is left to Python's collector; the builder calls back into Python (its
# logger) with a lock held, and the Python there allocates enough for an automatic collection to run.
COLLECTED_IN_A_CALLBACK = """
import gc, sys
from pathlib import Path
from smlp_deploy.tensorrt.builder import BuildOptions, build_engine
from smlp_deploy.tensorrt.messages import TensorRTMessages
from smlp_deploy.tensorrt.flavours import TENSORRT_RTX, import_tensorrt

api = import_tensorrt(TENSORRT_RTX)
record = TensorRTMessages.record
first = True
def allocating(self, level, message):  # the first message comes from Builder(), which holds the lock
    global first
    if first:
        first = False
        allocated = [[] for _ in range(200_000)]
    record(self, level, message)
TensorRTMessages.record = allocating
gc.collect()
gc.set_threshold(100_000)  # no automatic collection before the callback
cycle = {"builder": api.Builder(api.Logger(api.Logger.ERROR))}
cycle["self"] = cycle
del cycle
build_engine(TENSORRT_RTX, Path(sys.argv[1]), Path(sys.argv[2]), 64, BuildOptions())
print("built")
"""


def test_a_collection_inside_a_builder_callback_does_not_deadlock(every_precision_64, tmp_path):
    """TensorRT for RTX's IBuilder destructor takes a lock its Builder() holds while logging (a second builder's
    logger 'differs from one already registered'): a collection in that callback freeing the earlier builder
    hung the process forever (a pytest worker, seen with gdb). build_engine pauses the collector."""
    model = every_precision_64.out_dir / "model.onnx"
    engine = tmp_path / "engine.rtx.plan"
    done = subprocess.run([sys.executable, "-c", COLLECTED_IN_A_CALLBACK, str(model), str(engine)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == "built\n", done.stderr[-2000:]


CTRL_C_IN_A_CALLBACK = CTRL_C_AS_IN_A_TERMINAL + """
import os, signal, sys
from pathlib import Path
from smlp_deploy.tensorrt.builder import BuildOptions, build_engine
from smlp_deploy.tensorrt.flavours import TENSORRT_RTX

def ctrl_c(message):  # the builder's first phase, reported from inside its progress monitor
    os.kill(os.getpid(), signal.SIGINT)
try:
    build_engine(TENSORRT_RTX, Path(sys.argv[1]), Path(sys.argv[2]), 64, BuildOptions(), on_progress=ctrl_c)
except KeyboardInterrupt:
    print("interrupted", Path(sys.argv[2]).exists())
"""


def test_a_ctrl_c_inside_a_builder_callback_cancels_the_build(every_precision_64, tmp_path):
    """TensorRT for RTX catches and drops an exception raised in its callbacks: a Ctrl-C that landed in the logger
    or the progress monitor was lost ("Exception caught in phase_start(): KeyboardInterrupt") and the engine was
    written anyway; an export interrupted then finished with status 0 (seen in test_reliability under load)."""
    engine = tmp_path / "engine.rtx.plan"
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_CALLBACK, str(every_precision_64.out_dir / "model.onnx"),
                           str(engine)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == "interrupted False\n", done.stderr[-2000:]


def test_an_impossible_profile_gives_the_builder_message(exported, tmp_path):
    """A profile of 32x32 images for a graph made for 64x64 (or 224x224) ones."""
    _, out, _ = exported
    with pytest.raises(SmlpDeployError) as error:
        build_engine(TENSORRT_RTX, out / "model.onnx", tmp_path / "engine.rtx.plan", 32, BuildOptions())
    assert "TensorRT for RTX failed to build an engine from model.onnx" in str(error.value)
    assert "Dimension mismatch for tensor input and profile 0" in str(error.value)
    assert not (tmp_path / "engine.rtx.plan").exists()


def test_the_builder_reports_each_warning_once_with_its_count(exported, tmp_path):
    """TensorRT for RTX warns once per quantized conv layer while building the INT8 engine: the progress gets each
    message once, counted."""
    variant, out, _ = exported
    said: list[str] = []
    build_engine(TENSORRT_RTX, out / "model.int8.onnx", tmp_path / "engine.int8.rtx.plan", SIZES[variant],
                 BuildOptions(), on_progress=said.append)
    (warned,) = [line for line in said if line.startswith("TensorRT for RTX warned: ")]
    assert warned.count("Converting conv weight scales to fp32.") == 1 and re.search(r"fp32\. \(x\d+\)", warned)
    assert "Building engine (6 steps)" in said  # the builder's top-level phase, as the progress shows it


def test_chosen_compute_capabilities_are_built_and_recorded(tmp_path):
    build = BuildOptions(compute_capabilities=("8.9", "8.6"))
    result = export_model("test", image_size=64, precisions=("fp16",), out_dir=tmp_path, quiet=True, build=build,
                          flavours=("tensorrt-rtx",))
    record = result.manifest.artifact("engine.fp16.rtx.plan")
    assert record.compute_capabilities == ["8.9", "8.6"]
    assert [e.flavour for e in result.manifest.engines] == ["tensorrt-rtx"]


@pytest.mark.parametrize("capabilities", [("9.0",), ("8.6", "10.0")])
def test_a_compute_capability_the_library_lacks_is_refused_before_any_work(tmp_path, capabilities):
    out = tmp_path / "export"
    lacking = re.escape(capabilities[-1])  # 8.6 is one it builds for: the refusal names the one it lacks
    with pytest.raises(InputError, match=rf"cannot build for compute capability {lacking}: it builds for "
                                         r"7\.5, 8\.0, 8\.6, 8\.9, 12\.0, 12\.1") as error:
        export_model("test", image_size=64, out_dir=out, quiet=True,
                     build=BuildOptions(compute_capabilities=capabilities))
    assert error.value.parameter == "compute_capabilities" and not out.exists()


def test_the_command_line_chooses_flavours_and_capabilities(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "test", "--image-size", "64", "--quiet",
                                     "--out", str(tmp_path / "a"), "--compute-capability", "9.0"])
    assert entry_point() == 2
    assert capsys.readouterr().err.startswith("error: --compute-capability: TensorRT for RTX")
    monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "test", "--image-size", "64", "--quiet",
                                     "--out", str(tmp_path / "b"), "--flavour", "tensorrt-rtx",
                                     "--compute-capability", "12.0"])
    assert entry_point() == 0
    manifest = Manifest.load(tmp_path / "b" / "manifest.json")
    assert manifest.artifact("engine.fp32.rtx.plan").compute_capabilities == ["12.0"]
    if TENSORRT.build_unavailable():
        monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "test", "--image-size", "64", "--quiet",
                                         "--out", str(tmp_path / "c"), "--flavour", "tensorrt,tensorrt-rtx"])
        assert entry_point() == 2
        error = capsys.readouterr().err
        assert error.startswith("error: --flavour: cannot build TensorRT engines here: TensorRT is not installed")
        assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("capabilities", [("8.6",), ("8.9", "8.0")])
def test_fp8_for_a_compute_capability_without_it_is_refused_before_any_work(tmp_path, capabilities):
    out = tmp_path / "export"
    with pytest.raises(InputError, match=r"FP8 engines run on compute capability 8\.9, 12\.0, 12\.1 only, and compute "
                                         rf"capability {capabilities[-1]} was asked for") as error:
        export_model("test", image_size=64, precisions=("fp16", "fp8"), out_dir=out, quiet=True,
                     fp8_options=Fp8Options(CALIB, samples=2), build=BuildOptions(compute_capabilities=capabilities))
    assert error.value.parameter == "compute_capabilities" and not out.exists()


def test_the_library_itself_refuses_fp8_for_ampere(exported, tmp_path):
    """Why the export refuses first: TensorRT for RTX's optimizer stops at the FP8 types for sm86, after parsing."""
    variant, out, _ = exported
    with pytest.raises(SmlpDeployError, match=r"Cannot compile for target\(s\) sm86, because the model contains "
                                              "HW-specific datatypes: fp8_e4m3"):
        build_engine(TENSORRT_RTX, out / "model.fp8.onnx", tmp_path / "engine.fp8.rtx.plan", SIZES[variant],
                     BuildOptions(compute_capabilities=("8.6",)))
    assert not (tmp_path / "engine.fp8.rtx.plan").exists()


def test_fp8_alone_for_chosen_capabilities(tmp_path, capsys, monkeypatch):
    """The command line of the issue, on the small variant: an FP8 ONNX file with its parity, and its RTX engine."""
    monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "test", "--image-size", "64", "--quiet", "--fp8",
                                     "--calib-dir", str(CALIB), "--out", str(tmp_path / "e"),
                                     "--flavour", "tensorrt-rtx", "--compute-capability", "12.0,8.9"])
    assert entry_point() == 0
    manifest = Manifest.load(tmp_path / "e" / "manifest.json")
    assert [a.path for a in manifest.artifacts] == ["model.onnx", "model.fp8.onnx", "engine.fp8.rtx.plan"]
    assert manifest.artifact("engine.fp8.rtx.plan").compute_capabilities == ["12.0", "8.9"]
    assert manifest.artifact("model.fp8.onnx").parity.cosine >= 0.99
    assert manifest.fp8_calibration.method == "minmax" and manifest.calibration is None


def test_no_flavour_builds_no_engine(tmp_path):
    result = export_model("test", image_size=64, out_dir=tmp_path, quiet=True, flavours=())
    assert result.manifest.engines == [] and not list(tmp_path.glob("engine.*"))


def test_from_onnx_rebuilds_the_planned_engines(exported, tmp_path):
    variant, out, manifest = exported
    if variant != "test":
        pytest.skip("once is enough")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    (copy / "engine.fp16.rtx.plan").unlink()
    rebuilt = build_from_onnx(copy, flavours=("tensorrt-rtx",), quiet=True)
    for name in ("engine.fp32.rtx.plan", "engine.fp16.rtx.plan", "engine.int8.rtx.plan", "engine.fp8.rtx.plan"):
        record = rebuilt.manifest.artifact(name)
        assert record.status == UNVERIFIED and sha256_file(copy / name) == record.sha256
    assert Manifest.load(copy / "manifest.json") == rebuilt.manifest
    assert [a.path for a in rebuilt.manifest.artifacts] == [a.path for a in manifest.artifacts]


def test_a_killed_build_leaves_the_previous_export(tmp_path):
    out = tmp_path / "export"
    subprocess.run(export_command(out, "--fp16", "--quiet"), check=True, capture_output=True, cwd=ROOT)
    before = snapshot(out)
    outcome = interrupt_export(out, ("--fp16", "--seed", "3"), "Building engine (", signal.SIGKILL)
    assert outcome.returncode == -signal.SIGKILL
    assert snapshot(out) == before
    assert Classifier(out / "model.fp16.onnx").predict(str(sample_images()[0])).label


def test_engines_are_told_apart_by_their_first_bytes(exported, tmp_path):
    """An RTX engine under a TensorRT name, and files that are no engine at all, are refused by their header
    before any library or GPU is asked, naming what they are and what runs them."""
    _, out, _ = exported
    renamed = tmp_path / "engine.fp16.plan"
    renamed.write_bytes((out / "engine.fp16.rtx.plan").read_bytes())
    with pytest.raises(ArtifactError, match=r"is a TensorRT for RTX engine, not a TensorRT one: name it \*\.rtx\.plan "
                                            r"and run it with TensorRT for RTX \(pip install 'smlp-deploy\[rtx\]'\)"):
        load_backend(renamed)
    for name, data in (("empty.rtx.plan", b""), ("text.rtx.plan", b"not an engine\n" * 10),
                       ("short.rtx.plan", b"vtrt")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ArtifactError, match="is not a TensorRT for RTX engine"):
            load_backend(tmp_path / name)


@pytest.mark.skipif(TENSORRT_RTX.run_unavailable() is None, reason="a GPU here runs RTX engines")
def test_without_a_gpu_an_rtx_engine_says_what_gpu_it_needs(exported):
    _, out, _ = exported
    with pytest.raises(BackendUnavailableError, match=r"TensorRT for RTX engines run on an NVIDIA GPU of compute "
                                                      r"capability 8\.0, 8\.6, 8\.9, 12\.0, 12\.1 \(A100"):
        Classifier(out / "engine.fp16.rtx.plan")


@pytest.mark.tensorrt("tensorrt-rtx")
def test_rtx_engines_verify_on_a_gpu_and_keep_their_runtime_cache(exported, tmp_path):
    """On an RTX-class GPU: --verify-engines checks every RTX engine against PyTorch and records it; the runtime
    cache written by one process is read by the next."""
    _, out, _ = exported
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    from smlp_deploy.export.engines import verify_engines

    verified = verify_engines(copy, quiet=True)
    runs_fp8 = runs_precision(current_compute_capability(), "fp8")
    for name in ("engine.fp32.rtx.plan", "engine.fp16.rtx.plan", "engine.int8.rtx.plan", "engine.fp8.rtx.plan"):
        if name == "engine.fp8.rtx.plan" and not runs_fp8:
            assert verified.manifest.artifact(name).status == UNVERIFIED  # an Ampere GPU has no FP8
            continue
        record = verified.manifest.artifact(name)
        assert record.status == "verified" and record.parity is not None and record.gpu is not None
    with Classifier(copy / "engine.fp16.rtx.plan") as first:
        logits = first.logits([str(p) for p in sample_images()])
    caches = list(copy.glob("engine.fp16.rtx.*.runtime.cache"))
    assert len(caches) == 1 and caches[0].stat().st_size > 0
    with Classifier(copy / "engine.fp16.rtx.plan", cuda_graphs=True) as second:
        np.testing.assert_allclose(second.logits([str(p) for p in sample_images()]), logits, rtol=0, atol=1e-3)


def test_the_artifact_table_pairs_each_engine_with_its_source():
    for kind in ARTIFACTS.values():
        if kind.is_engine:
            source = ARTIFACTS[kind.source]
            assert source.builds_engines and source.precision == kind.precision and source.target == kind.target
            assert kind.file_name.endswith(kind.flavour.engine_suffix)
    names = {f: [k.file_name for k in ARTIFACTS.values() if k.source == "model.fp16.onnx" and k.flavour is f]
             for f in (TENSORRT, TENSORRT_RTX)}
    assert names == {TENSORRT: ["engine.fp16.plan"], TENSORRT_RTX: ["engine.fp16.rtx.plan"]}


@pytest.mark.skipif(TENSORRT_RTX.build_unavailable() is not None, reason="needs TensorRT for RTX's engines, built here")
def test_the_manifest_says_what_an_rtx_int8_engine_computes_in_int8(every_precision_64):
    """TensorRT for RTX lists INT8 only as weight-only GEMM: the manifest (and so the export's summary) says the
    INT8 engine brings INT8's accuracy, not INT8 activation speed; TensorRT's own INT8 engines are not said so."""
    manifest = every_precision_64.manifest
    rtx = manifest.engine_status(TENSORRT_RTX.name)
    assert "engine.int8.rtx.plan" in rtx.engines and rtx.reason.endswith(f"; INT8: {TENSORRT_RTX.int8}")
    assert "INT8 weight-only GEMM" in TENSORRT_RTX.int8 and "not INT8 activation speed" in TENSORRT_RTX.int8
    assert "weight-only" not in manifest.engine_status(TENSORRT.name).reason
