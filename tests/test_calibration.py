"""INT8 and FP8: calibration sets, methods and caches, the Q/DQ forms, and accuracy on the trained digits
fixture."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from smlp_deploy import Classifier
from smlp_deploy.calibration import (
    METHODS,
    TARGETS,
    calibrated_tensors,
    compute_ranges,
    entropy_threshold,
    get_method,
    load_calibration_set,
    quantize_qdq,
    read_cache,
)
from smlp_deploy.calibration.collector import RESOLUTION
from smlp_deploy.calibration.methods import ENTROPY_RANGE_PERCENTILE
from smlp_deploy.calibration.options import Fp8Options, Int8Options
from smlp_deploy.calibration.quantize import conv_sums
from smlp_deploy.cli.eval import entry_point as eval_entry_point
from smlp_deploy.cli.export import entry_point
from smlp_deploy.errors import CalibrationError
from smlp_deploy.export import export_model
from smlp_deploy.models import PreprocessConfig
from smlp_deploy.tensorrt.flavours import TENSORRT_RTX
from tests.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, write_digits

from .conftest import assert_steps_counted

QUANTIZED = {"Conv", "MatMul", "Gemm"}
PREPROCESS = PreprocessConfig.for_image_size(IMAGE_SIZE)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits"))


def export_digits(out, digits, quiet=True, **options):
    return export_model(
        "test", checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
        precisions=("fp32", "fp16", "int8", "fp8"), out_dir=out, eval_dir=digits["test"], quiet=quiet,
        int8_options=Int8Options(digits["train"], targets=("tensorrt", "cpu"), **options),
        fp8_options=Fp8Options(digits["train"]),
    )


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """The usual fastest exports, ``--fp16 --int8`` (both INT8 targets) and ``--fp16 --fp8``, evaluated on the
    held-out split."""
    return export_digits(tmp_path_factory.mktemp("int8"), digits)


def graph_index(model: onnx.ModelProto):
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return initializers, producer, consumers


def output_channel_axis(node: onnx.NodeProto, operand: int) -> int | None:
    """The axis of a weight operand that indexes the op's output channels, where TensorRT takes per-channel
    scales; None for a MatMul's first operand (sMLPNet's ``W @ x`` height mixing), which it takes per tensor."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1 if operand == 1 else None  # MatMul: x @ W mixes W's columns


def weight_scale_axis(node: onnx.NodeProto, operand: int, dq: onnx.NodeProto, initializers) -> int | None:
    """Checks the scale of the weight ``dq`` dequantizes into input ``operand`` of ``node``: per channel on its
    output-channel axis where TensorRT takes that, else per tensor; returns the axis (None: per tensor)."""
    weight, scale = initializers[dq.input[0]], initializers[dq.input[1]]
    axis = output_channel_axis(node, operand)
    if axis is None:
        assert scale.shape == (), node.name
    else:
        assert next(a.i for a in dq.attribute if a.name == "axis") == axis, node.name
        assert scale.shape == (weight.shape[axis],), node.name
    return axis


def test_tensorrt_form(exported):
    """Signed int8, zero points 0, per-channel weight scales on the output-channel axis (per-tensor for the
    ``W @ x`` MatMuls), Q/DQ only on the inputs of Conv/MatMul/Gemm, float biases, and everything else float
    (fp16 here, since --fp16 was given)."""
    float_model = onnx.load(str(exported.out_dir / "model.onnx"))
    model = onnx.load(str(exported.out_dir / "model.int8.onnx"))
    initializers, producer, consumers = graph_index(model)

    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = initializers[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
            assert initializers[node.input[1]].dtype == np.float16, f"{node.name}: scales follow --fp16"
        if node.op_type == "QuantizeLinear":
            assert all(c.op_type == "DequantizeLinear" for c in consumers[node.output[0]])
        if node.op_type == "DequantizeLinear":
            # Only for a GEMM-like op; a tensor it shares with another op (the sMLP block's identity branch into
            # Concat) reaches that op through the same DQ, as onnxruntime.quantization places it.
            assert QUANTIZED & {c.op_type for c in consumers[node.output[0]]}, f"{node.name} feeds no GEMM-like op"

    quantized = [n for n in model.graph.node if n.op_type in QUANTIZED]
    assert len(quantized) == sum(n.op_type in QUANTIZED for n in float_model.graph.node)
    axes = set()
    for node in quantized:
        for operand, name in enumerate(node.input[:2]):
            dq = producer.get(name)
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name} input {operand} is not Q/DQ"
            if dq.input[0] in initializers:  # a weight: int8, per channel where TensorRT takes it
                assert initializers[dq.input[0]].dtype == np.int8
                axes.add((node.op_type, operand, weight_scale_axis(node, operand, dq, initializers)))
        for bias in node.input[2:]:
            assert bias in initializers and initializers[bias].dtype == np.float16, f"{node.name}: float bias"
    # Every kind of weight the network has was seen: convs, the channel MLP (x @ W), the H-mixing (W @ x), head.
    assert axes == {("Conv", 1, 0), ("MatMul", 1, 1), ("MatMul", 0, None), ("Gemm", 1, 0)}
    assert {n.op_type for n in model.graph.node if n.op_type in ("LayerNormalization", "Gelu")} == {
        "LayerNormalization", "Gelu"}  # the float ops are kept, not quantized


def test_cpu_form(exported):
    """The CPU form (calibration/quantize.py), what OpenVINO's CPU plugin runs as fused int8 kernels: signed int8,
    zero points 0 (the plugin leaves an fp32 Subtract before each kernel for a zero point), per-channel weights on
    their output-channel axis (axis 0 for ``W @ x``), fp32 scales and float parts, float biases. Quantized: the
    inputs of every Conv/MatMul/Gemm, and both inputs of each residual Add of a Conv's output, which the plugin
    fuses into that Conv as an int8 sum (and without which it computes sMLPNet wrongly). Left fp32: the outputs
    of the Conv/MatMul/Gemm (bias Adds, GELU, LayerNorm requantize in their own pass, no FakeQuantize of their
    own), the residual Add after the channel MLP and the Transposes (an int8 Add there moved the plugin's logits
    from ONNX Runtime's). A Concat's quantized inputs share its output's scale, so the plugin moves the Concat in
    int8 without requantizing the identity branch."""
    float_model = onnx.load(str(exported.out_dir / "model.onnx"))
    model = onnx.load(str(exported.out_dir / "model.int8.cpu.onnx"))
    initializers, producer, consumers = graph_index(model)

    def dequantized(name: str) -> onnx.NodeProto | None:
        node = producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = initializers[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
            assert initializers[node.input[1]].dtype == np.float32, node.name
        if node.op_type == "QuantizeLinear":
            assert all(c.op_type == "DequantizeLinear" for c in consumers[node.output[0]])
    quantized = [n for n in model.graph.node if n.op_type in QUANTIZED]
    assert len(quantized) == sum(n.op_type in QUANTIZED for n in float_model.graph.node)
    axes = set()
    for node in quantized:
        for operand, name in enumerate(node.input[:2]):
            dq = dequantized(name)
            assert dq is not None, f"{node.name} input {operand} is not Q/DQ"
            if dq.input[0] in initializers:
                assert initializers[dq.input[0]].dtype == np.int8
                scale = initializers[dq.input[1]]
                axis = next(a.i for a in dq.attribute if a.name == "axis")
                assert scale.shape == (initializers[dq.input[0]].shape[axis],), node.name
                axes.add((node.op_type, operand, axis))
        for bias in node.input[2:]:
            assert initializers[bias].dtype == np.float32, f"{node.name}: float bias"
        if node.op_type != "Conv":  # a Conv's output is quantized only as the input of its sum
            assert not any(c.op_type == "QuantizeLinear" for c in consumers.get(node.output[0], [])), node.name
    assert axes == {("Conv", 1, 0), ("MatMul", 1, 1), ("MatMul", 0, 0), ("Gemm", 1, 0)}

    sums = {float_model.graph.node[i].name for i in conv_sums(float_model)}
    residual = [n for n in model.graph.node if n.op_type == "Add" and not set(initializers) & set(n.input)]
    assert len(residual) == 10 and len(sums) == 5  # two a block; the one after the token mixing's 1x1 Conv
    for add in residual:
        int8 = [dequantized(name) is not None for name in add.input]
        assert int8 == ([True, True] if add.name in sums else [False, False]), add.name
    assert not any(dequantized(i) for n in model.graph.node if n.op_type == "Transpose" for i in n.input)

    scale = {dq.output[0]: float(initializers[dq.input[1]]) for dq in model.graph.node
             if dq.op_type == "DequantizeLinear" and dq.input[0] not in initializers}
    ranges = json.loads((exported.out_dir / "calibration.cache.json").read_text())["ranges"]
    for concat in (n for n in model.graph.node if n.op_type == "Concat"):
        (quantize,) = consumers[concat.output[0]]
        shared = [scale[name] for name in concat.input if name in scale]
        assert shared and set(shared) == {float(initializers[quantize.input[1]])}, concat.name
        # The widest range of the group (the identity branch may reach further than the Concat's percentile), as
        # onnxruntime.quantization scales a symmetric int8 range: magnitude / 127.
        calibrated = [producer[dq.input[0]].input[0] for name in concat.input if (dq := dequantized(name))]
        widest = max(max(-ranges[name][0], ranges[name][1]) for name in (*calibrated, concat.output[0]))
        assert shared[0] == pytest.approx(widest / 127, rel=1e-6), concat.name


def test_fp8_form(exported):
    """TensorRT's FP8 form: FLOAT8E4M3FN weights and activations with FP8 zero points of 0, activation scales
    amax / 448 of the calibrated ranges, weights per channel on their output-channel axis (per tensor for the
    ``W @ x`` MatMuls), Q/DQ only on the inputs of the GEMM-like ops with FP8 kernels: the stem and depthwise
    convs (under 16 channels per group), the GEMMs with K or N under 16 (the small spatial mixes, the 10-class
    head) stay float (fp16 here), as do the biases."""
    model = onnx.load(str(exported.out_dir / "model.fp8.onnx"))
    initializers, producer, consumers = graph_index(model)
    ranges = json.loads((exported.out_dir / "calibration.fp8.cache.json").read_text())["ranges"]
    fp8 = onnx.TensorProto.FLOAT8E4M3FN
    zero_point_types = {i.data_type for i in model.graph.initializer if i.name.endswith("zero_point")}
    assert zero_point_types == {fp8}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not initializers[node.input[2]].astype(np.float32).any(), node.name
            assert initializers[node.input[1]].dtype == np.float16, f"{node.name}: scales follow --fp16"
        if node.op_type == "DequantizeLinear":
            assert {c.op_type for c in consumers[node.output[0]]} <= QUANTIZED, node.name
        if node.op_type == "QuantizeLinear":  # an activation: its scale is amax / 448 of its calibrated range
            name = node.input[0]
            while name not in ranges:  # the float32 tensor, before the fp16 conversion's Casts
                name = producer[name].input[0]
            low, high = ranges[name]
            assert initializers[node.input[1]] == np.float16(max(-low, high) / 448), node.name

    quantized_weights, float_nodes = set(), []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED:
            continue
        dequantized = [producer.get(name) for name in node.input[:2]]
        if not any(dq is not None and dq.op_type == "DequantizeLinear" for dq in dequantized):
            float_nodes.append(node)
            continue
        for operand, dq in enumerate(dequantized):
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name} input {operand} is not Q/DQ"
            if dq.input[0] in initializers:
                assert next(i for i in model.graph.initializer if i.name == dq.input[0]).data_type == fp8
                quantized_weights.add((node.op_type, operand, weight_scale_axis(node, operand, dq, initializers)))
        for bias in node.input[2:]:
            assert initializers[bias].dtype == np.float16, f"{node.name}: float bias"
    assert quantized_weights == {("Conv", 1, 0), ("MatMul", 1, 1), ("MatMul", 0, None)}
    float_ops = {(n.op_type, next((a.i for a in n.attribute if a.name == "group"), 1) > 1) for n in float_nodes}
    assert float_ops == {("Conv", False), ("Conv", True), ("MatMul", False), ("Gemm", False)}  # stem, dw, small
    for node in float_nodes:
        weight = next(initializers[name] for name in node.input[:2] if name in initializers)
        small = weight.shape[1] < 16 if node.op_type == "Conv" else min(weight.shape) < 16
        assert small, f"{node.name} {weight.shape} has FP8 kernels but was left in float"


def test_accuracy_targets_on_the_held_out_split(exported):
    manifest = json.loads(exported.manifest_path.read_text())
    fp32 = manifest["model"]["accuracy"]
    assert fp32["n_images"] == 450 and fp32["top1"] >= 0.98  # the fixture learned the task
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    assert by_path["model.onnx"]["accuracy"]["top1"] == fp32["top1"]
    assert by_path["model.fp16.onnx"]["accuracy"]["top1"] >= fp32["top1"] - 0.002
    for path in ("model.int8.onnx", "model.int8.cpu.onnx"):
        entry = by_path[path]
        assert entry["precision"] == "int8" and entry["accuracy"]["top1"] >= fp32["top1"] - 0.010, path
        assert entry["parity"]["n_inputs"] == 5 and entry["parity"]["top1_agreement"] == 1.0, path
    # FP8 as INT8, and checked on every verification input (random tensors too), not only the photos.
    entry = by_path["model.fp8.onnx"]
    assert entry["precision"] == "fp8" and entry["accuracy"]["top1"] >= fp32["top1"] - 0.010
    assert entry["parity"]["n_inputs"] == 16 and entry["parity"]["cosine"] >= 0.99
    assert entry["target"] == "tensorrt" and entry["float_precision"] == "fp16"
    # Engines built for GPUs this machine lacks are listed, and left to smlp-eval on such a GPU.
    engines = [a for a in manifest["artifacts"] if a["format"] == "tensorrt-rtx"]
    assert all(("accuracy" in a) == (TENSORRT_RTX.run_unavailable() is None) for a in engines)
    for calibration, method in ((manifest["calibration"], "percentile"), (manifest["fp8_calibration"], "minmax")):
        assert calibration["samples"] == 256 and calibration["skipped"] == 0 and not calibration["cache_reused"]
        assert calibration["method"] == method


def test_int8_classifier_reads_real_digits(exported, digits):
    images = sorted(digits["test"].glob("*/*.png"))[::45]
    with Classifier(exported.out_dir / "model.int8.onnx") as classifier:
        predictions = classifier.predict(images)
    assert [p.label for p in predictions] == [path.parent.name for path in images]


def test_smlp_eval_reports_each_artifact(exported, digits, capsys, monkeypatch):
    manifest = json.loads(exported.manifest_path.read_text())
    recorded = {a["path"]: a["accuracy"] for a in manifest["artifacts"] if "accuracy" in a}
    names = ("model.int8.onnx", "model.fp8.onnx", "model.onnx")
    paths = [str(exported.out_dir / name) for name in names]
    monkeypatch.setattr("sys.argv", ["smlp-eval", *paths, "--data", str(digits["test"]), "--json", "--quiet"])
    assert eval_entry_point() == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["artifact"] for r in rows] == paths
    for row, name in zip(rows, names, strict=True):
        assert {k: row[k] for k in ("top1", "top5", "n_images")} == recorded[name]

    monkeypatch.setattr("sys.argv", ["smlp-eval", paths[0], "--data", str(next(digits["test"].glob("0/*.png")))])
    assert eval_entry_point() != 0 and "is a file, not a folder" in capsys.readouterr().err


def test_second_run_reuses_the_cache(exported, digits, capsys):
    first = json.loads(exported.manifest_path.read_text())
    rerun = export_digits(exported.out_dir, digits, quiet=False)
    assert_steps_counted(capsys.readouterr().err)
    manifest = json.loads(rerun.manifest_path.read_text())
    assert manifest["calibration"]["cache_reused"] and manifest["fp8_calibration"]["cache_reused"]
    hashes = {a["path"]: a["sha256"] for a in first["artifacts"]}
    # The ONNX files only: engines are not byte-reproducible (TensorRT for RTX's first build in a process differs
    # from its later builds of the same graph; measured here).
    for artifact in [a for a in manifest["artifacts"] if a["format"] == "onnx"]:
        assert artifact["sha256"] == hashes[artifact["path"]], f"{artifact['path']} changed on a cached re-run"


def test_stale_and_foreign_caches(exported, tmp_path):
    path = exported.out_dir / "calibration.cache.json"
    key = json.loads(path.read_text())["key"]
    tensors = calibrated_tensors(onnx.load(str(exported.out_dir / "model.onnx")), TARGETS)
    assert read_cache(path, key, tensors).ranges is not None
    other_images = {**key, "samples": key["samples"][:-1]}
    lookup = read_cache(path, other_images, tensors)
    assert lookup.ranges is None and "stale (the calibration images changed)" in lookup.message
    other_model = {**key, "model_sha256": "0" * 64, "settings": {}}
    assert "the model, the method's settings changed" in read_cache(path, other_model, tensors).message

    foreign = tmp_path / "notes.json"
    foreign.write_text('{"results": [1, 2]}')
    for bad, message in ((foreign, "is not an smlp-deploy calibration cache"),
                         (exported.out_dir / "model.onnx", "cannot be read as a calibration cache")):
        before = bad.read_bytes()
        with pytest.raises(CalibrationError, match=message):
            read_cache(bad, key, tensors)
        assert bad.read_bytes() == before


def export_cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "test", "--image-size", "64", *args])
    return entry_point()


def test_cli_refuses_a_foreign_cache_before_writing(digits, tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "ranges.json"
    foreign.write_text("[]")
    out = tmp_path / "export"
    code = export_cli(monkeypatch, "--int8", "--calib-dir", str(digits["train"]), "--calib-cache", str(foreign),
                      "--out", str(out))
    assert code != 0 and "not an smlp-deploy calibration cache" in capsys.readouterr().err
    assert not out.exists() and foreign.read_text() == "[]"


@pytest.mark.parametrize("flag", ["--int8", "--fp8"])
def test_quantizing_needs_calibration_images(tmp_path, capsys, monkeypatch, flag):
    with pytest.raises(SystemExit) as info:  # a usage error, reported by argparse
        export_cli(monkeypatch, flag, "--out", str(tmp_path / "x"))
    assert info.value.code == 2
    assert f"{flag} needs calibration images: --calib-dir DIR" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_cache_of_another_precision_is_refused_before_writing(exported, digits, tmp_path, capsys, monkeypatch):
    """INT8's cache named for FP8, FP8's for INT8, or one path for both: refused before anything is written, and
    the cache is left as it was."""
    int8_cache, fp8_cache = (exported.out_dir / name for name in ("calibration.cache.json",
                                                                  "calibration.fp8.cache.json"))
    before = int8_cache.read_bytes(), fp8_cache.read_bytes()
    for flag, cache, message in (
        ("--fp8", int8_cache, "holds INT8 ranges, and FP8 calibrates its own"),
        ("--int8", fp8_cache, "holds FP8 ranges, and INT8 calibrates its own"),
    ):
        out = tmp_path / flag.strip("-")
        code = export_cli(monkeypatch, flag, "--calib-dir", str(digits["train"]), "--calib-cache", str(cache),
                          "--out", str(out))
        error = capsys.readouterr().err
        assert code == 2 and f"error: --calib-cache: calibration cache '{cache}' {message}" in error, error
        assert "left untouched" in error and not out.exists()
    code = export_cli(monkeypatch, "--int8", "--fp8", "--calib-dir", str(digits["train"]), "--calib-cache",
                      str(tmp_path / "ranges.json"), "--out", str(tmp_path / "both"))
    error = capsys.readouterr().err
    assert code == 2 and "INT8 and FP8 keep their ranges in separate calibration caches" in error
    assert not (tmp_path / "both").exists() and not (tmp_path / "ranges.json").exists()
    assert (int8_cache.read_bytes(), fp8_cache.read_bytes()) == before


def test_fp8_takes_minmax_or_percentile(digits, tmp_path, capsys, monkeypatch):
    with pytest.raises(CalibrationError, match="FP8 calibrates with minmax or percentile, not 'entropy'"):
        Fp8Options(digits["train"], method="entropy").check()
    code = export_cli(monkeypatch, "--fp8", "--calib-method", "entropy", "--calib-dir", str(digits["train"]),
                      "--out", str(tmp_path / "x"))
    assert code == 2 and "error: --calib-method: FP8 calibrates with" in capsys.readouterr().err


def test_empty_or_unreadable_calibration_folders_write_nothing(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an image")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.png"):
        (broken / name).write_bytes(b"\xff\xd8 truncated")
    for folder, message in ((empty, "holds no images"), (broken, "none of the 2 image files")):
        out = tmp_path / f"out-{folder.name}"
        with pytest.raises(CalibrationError, match=message):
            export_model("test", image_size=64, precisions=("fp32", "int8"), out_dir=out, quiet=True,
                         int8_options=Int8Options(folder))
        assert not out.exists()
        with pytest.raises(CalibrationError, match=message):
            export_model("test", image_size=64, precisions=("fp32", "fp8"), out_dir=out, quiet=True,
                         fp8_options=Fp8Options(folder))
        assert not out.exists()


def test_unreadable_files_are_skipped_and_counted(digits, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(digits["train"].glob("*/*.png"))[:3]
    for i, path in enumerate(good):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    (folder / "nested").mkdir()
    (folder / "nested" / "bad.webp").write_bytes(b"RIFF....WEBP")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        calib = load_calibration_set(folder, PREPROCESS, samples=10, quiet=True)
    assert len(calib) == 3 and calib.requested == 10 and calib.skipped[0][0] == "nested/bad.webp"
    assert [i.shape for i in calib.images()] == [(3, IMAGE_SIZE, IMAGE_SIZE)] * 3


def test_fewer_images_than_asked_warns_when_calibrating_not_when_the_cache_is_reused(digits, tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    for i, path in enumerate(sorted(digits["train"].glob("*/*.png"))[:3]):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    options = dict(checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, precisions=("fp32", "int8"),
                   out_dir=tmp_path / "export", quiet=True, int8_options=Int8Options(folder, samples=10))
    with pytest.warns(UserWarning, match="has 3 readable image\\(s\\), fewer than the 10 asked for; calibrating on 3"):
        first = export_model("test", **options)
    assert not first.manifest.calibration.cache_reused and first.manifest.calibration.samples_requested == 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = export_model("test", **options)
    assert again.manifest.calibration.cache_reused and again.manifest.calibration.samples == 3
    assert not [w for w in caught if "fewer than" in str(w.message)]


def test_sampling_is_deterministic(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough readable images: no warning
        first = load_calibration_set(digits["train"], PREPROCESS, samples=20, seed=1, quiet=True)
    again = load_calibration_set(digits["train"], PREPROCESS, samples=20, seed=1, quiet=True)
    other = load_calibration_set(digits["train"], PREPROCESS, samples=20, seed=2, quiet=True)
    assert first.files == again.files and np.array_equal(np.stack(list(first.images())), np.stack(list(again.images())))
    assert first.files != other.files
    assert len({f.split("/")[0] for f in first.files}) > 1  # drawn across class folders, not the first one


def test_cli_names_the_flag_of_a_bad_setting(tmp_path, capsys, monkeypatch):
    """The library names the API parameter; the command line names its flag for it."""
    with pytest.raises(CalibrationError, match=r"^calibration folder .* does not exist$") as info:
        Int8Options(tmp_path / "nowhere").check()
    assert info.value.parameter == "calib_dir"
    (tmp_path / "photo.jpg").write_bytes(b"")
    with pytest.raises(CalibrationError, match=r"^calibration folder .* is a file, not a folder$"):
        Int8Options(tmp_path / "photo.jpg").check()
    assert export_cli(monkeypatch, "--int8", "--calib-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)) == 2
    assert "error: --calib-dir: calibration folder" in capsys.readouterr().err


def test_bad_settings_are_named(digits):
    with pytest.raises(CalibrationError, match="calibration samples must be at least 1"):
        load_calibration_set(digits["train"], PREPROCESS, samples=0)
    with pytest.raises(CalibrationError, match="unknown calibration method 'kl'"):
        get_method("kl")
    with pytest.raises(CalibrationError, match="INT8 targets must be among"):
        Int8Options(digits["train"], targets=("gpu",)).check()


def test_methods_clip_inside_the_observed_range(exported, digits):
    """min/max is the largest magnitude seen (checked on the input tensor); entropy and percentile clip inside it."""
    calib = load_calibration_set(digits["train"], PREPROCESS, samples=32, quiet=True)
    model = exported.out_dir / "model.onnx"
    tensors = calibrated_tensors(onnx.load(str(model)), ["tensorrt"])
    ranges = {m: compute_ranges(model, calib, METHODS[m], tensors, quiet=True) for m in METHODS}
    largest = float(np.abs(np.stack(list(calib.images()))).max())
    assert ranges["minmax"]["input"] == (-largest, largest)
    for method in ("entropy", "percentile"):
        assert ranges[method].keys() == ranges["minmax"].keys() == set(tensors)
        for name, (lo, hi) in ranges[method].items():
            assert lo == -hi and 0 < hi <= ranges["minmax"][name][1], (method, name)


def test_fp32_float_parts_without_fp16(exported, caplog):
    """``--int8`` alone keeps the float parts (and the scales) float32, at the opset of the float model. The
    quantizer's own log records are dropped while it runs, and the application's logging is left as it was."""
    cache = json.loads((exported.out_dir / "calibration.cache.json").read_text())
    ranges = {name: tuple(r) for name, r in cache["ranges"].items()}
    root_filters = list(logging.getLogger().filters)
    with caplog.at_level(logging.INFO):
        model = quantize_qdq(exported.out_dir / "model.onnx", ranges, TARGETS["tensorrt"])
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname]
    assert logging.getLogger().filters == root_filters and logging.root.manager.disable == logging.NOTSET
    initializers, _, _ = graph_index(model)
    scales = [initializers[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert scales and all(s.dtype == np.float32 for s in scales)
    assert not any(a.dtype == np.float16 for a in initializers.values())


def test_a_calibration_image_in_another_format(tmp_path):
    """JPEG, WebP, BMP and TIFF photographs are read like PNGs."""
    from smlp_deploy.samples import sample_images

    photo = Image.open(sample_images()[0]).convert("RGB")
    for suffix in (".jpg", ".webp", ".bmp", ".tiff"):
        photo.save(tmp_path / f"photo{suffix}")
    calib = load_calibration_set(tmp_path, PREPROCESS, samples=4, quiet=True)
    assert sorted(calib.files) == ["photo.bmp", "photo.jpg", "photo.tiff", "photo.webp"]


def test_a_calibration_image_changed_after_drawing_is_named(digits, tmp_path, exported):
    folder = tmp_path / "calib"
    folder.mkdir()
    sources = sorted(digits["train"].glob("*/*.png"))[:3]
    for i, path in enumerate(sources):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    calib = load_calibration_set(folder, PREPROCESS, samples=3, quiet=True)
    other = sources[0] if calib.files[1] != "0.png" else sources[1]
    (folder / calib.files[1]).write_bytes(other.read_bytes())
    model = exported.out_dir / "model.onnx"
    with pytest.raises(CalibrationError, match=f"{calib.files[1]}' .* changed since the calibration set was drawn"):
        compute_ranges(model, calib, METHODS["minmax"], ["input"], quiet=True)


# The collector against ONNX Runtime's calibrators, the reference it replaces: the same images in the same batches.

REFERENCE_SAMPLES = 256
REFERENCE_BATCH = 16
RANKS = 2  # order statistics either side of the exact percentile that ONNX Runtime's histogram may land on


class _Feed:
    """ONNX Runtime's CalibrationDataReader protocol over one batch."""

    def __init__(self, batch: np.ndarray):
        self._feeds = iter([{"input": batch}])

    def get_next(self):
        return next(self._feeds, None)


@pytest.fixture(scope="module")
def reference(exported, digits, tmp_path_factory):
    """256 digits (the first alone, then 16 at a time, as compute_ranges batches them) through compute_ranges,
    through the collector's statistics directly, and through ONNX Runtime's MinMax, Percentile and Entropy
    calibrators; plus, for the exact percentile, the largest |x| of every tensor."""
    import contextlib
    import io
    from types import SimpleNamespace

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from smlp_deploy.calibration.collector import Scratch
    from smlp_deploy.calibration.forward import Activations

    model = exported.out_dir / "model.onnx"
    calib = load_calibration_set(digits["train"], PREPROCESS, samples=REFERENCE_SAMPLES, quiet=True)
    tensors = calibrated_tensors(onnx.load(str(model)), TARGETS)
    images = np.stack(list(calib.images()))
    batches = [images[:1]] + [images[i : i + REFERENCE_BATCH] for i in range(1, len(images), REFERENCE_BATCH)]
    ours = {m: compute_ranges(model, calib, METHODS[m], tensors, batch_size=REFERENCE_BATCH, quiet=True)
            for m in METHODS}

    scratch = Scratch()
    stats = {m: {t: METHODS[m].statistics(scratch) for t in tensors} for m in ("percentile", "entropy")}
    tails: dict[str, np.ndarray] = {}
    keep: dict[str, int] = {}
    activations = Activations(model, tensors)
    for batch in batches:
        values = activations(batch)
        for t in tensors:
            for by_tensor in stats.values():
                by_tensor[t].add(t, values[t])
            if t not in keep:  # enough of the largest |x| to hold the percentile's rank and RANKS beyond
                n = values[t].size * REFERENCE_SAMPLES
                keep[t] = n - int(np.ceil(METHODS["percentile"].settings["percentile"] / 100 * n)) + 2 + RANKS
            top = np.concatenate([tails.get(t, np.empty(0, np.float32)), np.abs(values[t]).ravel()])
            tails[t] = np.partition(top, top.size - keep[t])[-keep[t] :] if top.size > keep[t] else top

    ort = {}
    kinds = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}
    folder = tmp_path_factory.mktemp("ort-calibrators")
    for name, kind in kinds.items():
        # The inputs and outputs of Conv/MatMul/Gemm/Add: every tensor either INT8 form quantizes is among them.
        calibrator = create_calibrator(model, [*QUANTIZED, "Add"], augmented_model_path=str(folder / f"{name}.onnx"),
                                       calibrate_method=kind, extra_options=dict(METHODS[name].settings))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            for batch in batches:
                calibrator.collect_data(_Feed(batch))
        ort[name] = calibrator
    tails = {t: np.sort(v)[::-1] for t, v in tails.items()}
    return SimpleNamespace(tensors=tensors, ours=ours, stats=stats, tails=tails, ort=ort, activations=activations,
                           batches=batches)


def _magnitude(low, high) -> float:
    return max(abs(float(np.squeeze(low))), abs(float(np.squeeze(high))))


def test_minmax_equals_onnxruntime(reference):
    """Bit for bit: the same activations (the graph runs unoptimized, as ONNX Runtime's calibrators run it), for
    every tensor the INT8 forms need (ONNX Runtime calibrates them among the inputs and outputs of
    Conv/MatMul/Gemm/Add)."""
    expected = reference.ort["minmax"].compute_data()
    assert set(reference.tensors) <= set(expected.keys())
    for name in reference.tensors:
        magnitude = _magnitude(*expected[name].range_value)
        assert reference.ours["minmax"][name] == (-magnitude, magnitude), name


def test_percentile_is_within_a_bin_of_the_exact_one_and_of_onnxruntime(reference):
    """The threshold is the exact 99.99th percentile q (the ceil(p n)-th smallest |x|) rounded down to 11
    significant bits, or to our bin width w where that is coarser, so it lies in [q - max(w, q 2^-10), q]. ONNX
    Runtime's is the lower edge of its own bin (width w_ort) holding its own estimate, which counts slightly
    different values: it drops those below the first batch's smallest |x|, its grid origin, which moves the rank it
    cuts at by (1 - p) * dropped, under one, and a merge at the first batch's edge may move a count by one. In the
    sparse tail at 99.99% neighbouring order statistics lie several bins apart, so the tolerance against it is
    that rounding + w_ort + the spread of the order statistics RANKS either side of q."""
    method = METHODS["percentile"]
    p = method.settings["percentile"] / 100
    collector = reference.ort["percentile"].collector
    expected = reference.ort["percentile"].compute_data()
    beyond_bins = 0
    for name in reference.tensors:
        stats, tail = reference.stats["percentile"][name], reference.tails[name]
        ours = reference.ours["percentile"][name][1]
        assert ours == method.threshold(stats), name  # compute_ranges reads the collector's statistics
        assert stats.width <= stats.magnitude / method.bins * (1 + 1e-9), name  # at least `bins` bins span |x|
        rank = stats.size - int(np.ceil(p * stats.size))  # of q among the largest, from 0
        q = float(tail[rank])
        rounding = max(stats.width, q * 2**-RESOLUTION)
        assert q - rounding <= ours <= q, (name, ours, q, stats.width)
        hist, edges = collector.histogram_dict[name][:2]
        width_ort = float(edges[-1] - edges[0]) / len(hist)
        spread = float(tail[rank - RANKS] - tail[rank + RANKS])
        difference = abs(ours - _magnitude(*expected[name].range_value))
        assert difference <= rounding + width_ort + spread, (name, difference, rounding, width_ort, spread)
        beyond_bins += difference > rounding + width_ort
    assert beyond_bins <= len(reference.tensors) // 10, beyond_bins  # the rank spread is the exception


def test_entropy_equals_the_search_on_every_value_binned_at_once(reference):
    """Entropy's threshold is ONNX Runtime's KL search on the histogram of every value, at the power-of-two width
    that puts r, twice the (11-bit) 99.99th percentile of |x| at most the largest, at 512-1023 bins a side. Here
    that histogram is counted directly in a second pass over the same activations, with r from the exact order
    statistics, and the thresholds are equal. (ONNX Runtime's own Entropy searches 1,024 bins a side of the first
    batch's largest |x|, which an outlier moves; its KL search is the same, test_kl_search_equals_onnxruntime...)"""
    method = METHODS["entropy"]
    p = ENTROPY_RANGE_PERCENTILE / 100
    grids = {}
    for name in reference.tensors:
        stats, tail = reference.stats["entropy"][name], reference.tails[name]
        q = float(tail[stats.size - int(np.ceil(p * stats.size))])
        unit = 2.0 ** (math.frexp(q)[1] - 1 - RESOLUTION)
        robust = min(float(tail[0]), 2 * math.floor(q / unit) * unit)
        width = 2.0 ** (math.frexp(robust)[1] - 1 - int(math.log2(method.settings["num_bins"] // 4)))
        grids[name] = (width, int(robust // width) + 1, np.zeros(2 * (int(robust // width) + 1), np.int64))
    for batch in reference.batches:
        values = reference.activations(batch)
        for name, (width, bins, counted) in grids.items():
            index = np.clip(np.floor(values[name].astype(np.float64) / width), -bins, bins - 1).astype(np.int64)
            counted[:] += np.bincount(index.ravel() + bins, minlength=2 * bins)
    for name, (width, _, counts) in grids.items():
        stats = reference.stats["entropy"][name]
        low, high = entropy_threshold(counts, method.settings["num_quantized_bins"])
        expected = max(abs(max(low * width, stats.low)), abs(min(high * width, stats.high)))
        assert reference.ours["entropy"][name][1] == method.threshold(stats) == expected, name


def test_kl_search_equals_onnxruntime_on_any_histogram():
    """The prefix-sum KL search picks ONNX Runtime's candidate on the shapes activations take: Gaussian,
    shifted Laplace, one-sided heavy tails (after GELU), a mostly empty histogram, one dominant bin. ONNX
    Runtime scores in float32 (normalize, log, sum over up to 2 * half bins), which orders two candidates whose
    scores differ by less than its rounding either way; where the choices differ, the two scores must be that
    close (2^-20 relative, 16 float32 ulps). The mostly empty histogram has such a tie at 100 bins a side."""
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import HistogramCollector

    from smlp_deploy.calibration import kl_divergences

    rng = np.random.default_rng(0)
    collector = HistogramCollector("entropy", True, 2048, 128, 99.99, "same")
    shapes = {
        "gaussian": rng.standard_normal(100_000),
        "laplace": rng.laplace(size=100_000) + 0.7,
        "gelu-like": np.abs(rng.standard_normal(100_000)) ** 3 - 0.17,
        "sparse": rng.choice([-3.0, -1.0, 0.5, 2.0, 5.0], size=20_000) + rng.normal(0, 0.01, 20_000),
        "spike": np.concatenate([np.zeros(50_000), rng.standard_normal(2_000)]),
    }
    ties = 0
    for half in (100, 300, 700):
        for shape, x in shapes.items():
            width = np.abs(x).max() / (half - 0.5)
            hist = np.bincount((np.floor(x / width) + half).astype(np.int64), minlength=2 * half)
            edges = np.arange(-half, half + 1, dtype=np.float32)
            with contextlib.redirect_stdout(io.StringIO()):
                low, high = collector.get_entropy_threshold(
                    (hist, edges, np.float32(-half), np.float32(half), np.float32(half)), 128)
            ours, theirs = entropy_threshold(hist, 128)[0], int(low)
            if ours != theirs:
                scores = kl_divergences(hist, 128)
                assert scores[-ours - 64] == pytest.approx(scores[-theirs - 64], rel=2**-20), (shape, half)
                ties += 1
            assert int(high) == -theirs + 1 or int(high) == half, (shape, half)
    assert ties <= 1


def test_ranges_do_not_depend_on_the_batch_size(exported, digits):
    """The first image sets the grid and counts add up: any batching gives the same ranges."""
    model = exported.out_dir / "model.onnx"
    calib = load_calibration_set(digits["train"], PREPROCESS, samples=24, quiet=True)
    tensors = calibrated_tensors(onnx.load(str(model)), TARGETS)
    for method in METHODS.values():
        ranges = [compute_ranges(model, calib, method, tensors, batch_size=size, quiet=True) for size in (1, 7, 32)]
        assert ranges[0] == ranges[1] == ranges[2], method.name


def test_calibration_memory_does_not_grow_with_the_images(exported, digits):
    """Peak memory traced (numpy's arrays and Python's objects) is that of one batch, for 32 images or 512."""
    import tracemalloc

    model = exported.out_dir / "model.onnx"
    tensors = calibrated_tensors(onnx.load(str(model)), TARGETS)
    peaks = []
    for samples in (32, 512):
        calib = load_calibration_set(digits["train"], PREPROCESS, samples=samples, quiet=True)
        tracemalloc.start()
        try:
            compute_ranges(model, calib, METHODS["percentile"], tensors, batch_size=16, quiet=True)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    one_batch = 16 * 3 * IMAGE_SIZE**2 * 4
    assert peaks[1] <= peaks[0] * 1.05 + one_batch, peaks


def test_a_cache_for_fewer_tensors_or_another_collector_recalibrates(exported, digits, tmp_path, capsys):
    """A cache made for the TensorRT form lacks the Conv sums' inputs the CPU form quantizes: asking for both
    recalibrates (and says why) instead of quantizing with missing ranges; one made by another collector version
    does too."""
    from smlp_deploy.calibration.collector import VERSION

    out = tmp_path / "export"
    options = dict(checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, precisions=("fp32", "int8"),
                   out_dir=out)
    export_model("test", quiet=True, int8_options=Int8Options(digits["train"], samples=32), **options)
    cache = json.loads((out / "calibration.cache.json").read_text())
    assert cache["collector"] == VERSION
    result = export_model("test", quiet=False, **options,
                          int8_options=Int8Options(digits["train"], samples=32, targets=("tensorrt", "cpu")))
    err = capsys.readouterr().err
    assert "lacks" in err and "tensors the INT8 targets quantize" in err and "recalibrating" in err
    assert "tensors observed with ONNX Runtime's CPUExecutionProvider" in err
    assert not result.manifest.calibration.cache_reused and (out / "model.int8.cpu.onnx").is_file()

    path = out / "calibration.cache.json"
    data = json.loads(path.read_text())
    tensors = calibrated_tensors(onnx.load(str(out / "model.onnx")), TARGETS)
    assert read_cache(path, data["key"], tensors).ranges is not None
    del data["collector"]
    path.write_text(json.dumps(data))
    lookup = read_cache(path, data["key"], tensors)
    assert lookup.ranges is None and f"made by onnxruntime's calibrators, this is version {VERSION}" in lookup.message
