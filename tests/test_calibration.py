"""INT8: calibration sets, methods and cache, the Q/DQ forms, and accuracy on the trained digits fixture."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from smlp_deploy import Classifier
from smlp_deploy.calibration import (
    METHODS, TARGETS, compute_ranges, get_method, load_calibration_set, quantize_qdq, read_cache,
)
from smlp_deploy.cli.eval import entry_point as eval_entry_point
from smlp_deploy.cli.export import entry_point
from smlp_deploy.errors import CalibrationError
from smlp_deploy.export import export_model
from smlp_deploy.export.int8 import Int8Options
from smlp_deploy.models import PreprocessConfig
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
        precisions=("fp32", "fp16", "int8"), out_dir=out, eval_dir=digits["test"], quiet=quiet,
        int8_options=Int8Options(digits["train"], targets=("tensorrt", "cpu"), **options),
    )


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """The usual fastest export, ``--fp16 --int8``, with both INT8 targets, evaluated on the held-out split."""
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
                weight, scale = initializers[dq.input[0]], initializers[dq.input[1]]
                axis = output_channel_axis(node, operand)
                assert weight.dtype == np.int8
                if axis is None:
                    assert scale.shape == (), node.name
                else:
                    assert next(a.i for a in dq.attribute if a.name == "axis") == axis, node.name
                    assert scale.shape == (weight.shape[axis],), node.name
                axes.add((node.op_type, operand, axis))
        for bias in node.input[2:]:
            assert bias in initializers and initializers[bias].dtype == np.float16, f"{node.name}: float bias"
    # Every kind of weight the network has was seen: convs, the channel MLP (x @ W), the H-mixing (W @ x), head.
    assert axes == {("Conv", 1, 0), ("MatMul", 1, 1), ("MatMul", 0, None), ("Gemm", 1, 0)}
    assert {n.op_type for n in model.graph.node if n.op_type in ("LayerNormalization", "Gelu")} == {
        "LayerNormalization", "Gelu"}  # the float ops are kept, not quantized


def test_cpu_form(exported):
    """ONNX Runtime's CPU form: uint8 activations, int8 weights, int32 biases, float32 float parts."""
    model = onnx.load(str(exported.out_dir / "model.int8.cpu.onnx"))
    initializers, producer, _ = graph_index(model)
    activation_types, weight_types, bias_types = set(), set(), set()
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantized = initializers.get(node.input[0])
        if quantized is None:
            activation_types.add(initializers[node.input[2]].dtype)
        elif quantized.dtype == np.int32:
            bias_types.add(quantized.dtype)
        else:
            weight_types.add(quantized.dtype)
        assert initializers[node.input[1]].dtype == np.float32
    assert activation_types == {np.dtype(np.uint8)}
    assert weight_types == {np.dtype(np.int8)} and bias_types == {np.dtype(np.int32)}


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
    calibration = manifest["calibration"]
    assert calibration["samples"] == 256 and calibration["skipped"] == 0 and not calibration["cache_reused"]


def test_int8_classifier_reads_real_digits(exported, digits):
    images = sorted(digits["test"].glob("*/*.png"))[::45]
    with Classifier(exported.out_dir / "model.int8.onnx") as classifier:
        predictions = classifier.predict(images)
    assert [p.label for p in predictions] == [path.parent.name for path in images]


def test_smlp_eval_reports_each_artifact(exported, digits, capsys, monkeypatch):
    manifest = json.loads(exported.manifest_path.read_text())
    recorded = {a["path"]: a["accuracy"] for a in manifest["artifacts"]}
    paths = [str(exported.out_dir / name) for name in ("model.int8.onnx", "model.onnx")]
    monkeypatch.setattr("sys.argv", ["smlp-eval", *paths, "--data", str(digits["test"]), "--json", "--quiet"])
    assert eval_entry_point() == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["artifact"] for r in rows] == paths
    for row, name in zip(rows, ("model.int8.onnx", "model.onnx")):
        assert {k: row[k] for k in ("top1", "top5", "n_images")} == recorded[name]

    monkeypatch.setattr("sys.argv", ["smlp-eval", paths[0], "--data", str(next(digits["test"].glob("0/*.png")))])
    assert eval_entry_point() != 0 and "is not a directory" in capsys.readouterr().err


def test_second_run_reuses_the_cache(exported, digits, capsys):
    first = json.loads(exported.manifest_path.read_text())
    rerun = export_digits(exported.out_dir, digits, quiet=False)
    assert_steps_counted(capsys.readouterr().err)
    manifest = json.loads(rerun.manifest_path.read_text())
    assert manifest["calibration"]["cache_reused"]
    hashes = {a["path"]: a["sha256"] for a in first["artifacts"]}
    for artifact in manifest["artifacts"]:
        assert artifact["sha256"] == hashes[artifact["path"]], f"{artifact['path']} changed on a cached re-run"


def test_stale_and_foreign_caches(exported, tmp_path):
    path = exported.out_dir / "calibration.cache.json"
    key = json.loads(path.read_text())["key"]
    assert read_cache(path, key).ranges is not None
    other_images = {**key, "samples": key["samples"][:-1]}
    lookup = read_cache(path, other_images)
    assert lookup.ranges is None and "stale (the calibration images changed)" in lookup.message
    other_model = {**key, "model_sha256": "0" * 64, "settings": {}}
    assert "the model, the method's settings changed" in read_cache(path, other_model).message

    foreign = tmp_path / "notes.json"
    foreign.write_text('{"results": [1, 2]}')
    for bad in (foreign, exported.out_dir / "model.onnx"):
        before = bad.read_bytes()
        with pytest.raises(CalibrationError, match="not an smlp-deploy calibration cache|cannot be read"):
            read_cache(bad, key)
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


def test_int8_needs_calibration_images(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as info:  # a usage error, reported by argparse
        export_cli(monkeypatch, "--int8", "--out", str(tmp_path / "x"))
    assert info.value.code == 2
    assert "--calib-dir" in capsys.readouterr().err and not (tmp_path / "x").exists()


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


def test_unreadable_files_are_skipped_and_counted(digits, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(digits["train"].glob("*/*.png"))[:3]
    for i, path in enumerate(good):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    (folder / "nested").mkdir()
    (folder / "nested" / "bad.webp").write_bytes(b"RIFF....WEBP")
    with pytest.warns(UserWarning) as caught:
        calib = load_calibration_set(folder, PREPROCESS, samples=10, quiet=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "skipped 1 unreadable" in messages and "fewer than the 10 asked for" in messages
    assert len(calib) == 3 and calib.inputs.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert calib.skipped[0][0] == "nested/bad.webp"


def test_sampling_is_deterministic(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough readable images: no warning
        first = load_calibration_set(digits["train"], PREPROCESS, samples=20, seed=1, quiet=True)
    again = load_calibration_set(digits["train"], PREPROCESS, samples=20, seed=1, quiet=True)
    other = load_calibration_set(digits["train"], PREPROCESS, samples=20, seed=2, quiet=True)
    assert first.files == again.files and np.array_equal(first.inputs, again.inputs)
    assert first.files != other.files
    assert len({f.split("/")[0] for f in first.files}) > 1  # drawn across class folders, not the first one


def test_cli_names_the_flag_of_a_bad_setting(tmp_path, capsys, monkeypatch):
    """The library names the API parameter; the command line names its flag for it."""
    with pytest.raises(CalibrationError, match="^calibration folder .* is not a directory$") as info:
        Int8Options(tmp_path / "nowhere").check()
    assert info.value.parameter == "calib_dir"
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
    ranges = {m: compute_ranges(exported.out_dir / "model.onnx", calib.inputs, METHODS[m], quiet=True)
              for m in METHODS}
    largest = float(np.abs(calib.inputs).max())
    assert ranges["minmax"]["input"] == pytest.approx((-largest, largest))
    for method in ("entropy", "percentile"):
        assert ranges[method].keys() == ranges["minmax"].keys()
        for name, (lo, hi) in ranges[method].items():
            assert lo == -hi and 0 < hi <= ranges["minmax"][name][1] * (1 + 1e-6), (method, name)


def test_fp32_float_parts_without_fp16(exported, caplog):
    """``--int8`` alone keeps the float parts (and the scales) float32, at the opset of the float model. The
    quantizer's own log records are dropped while it runs, and the application's logging is left as it was."""
    cache = json.loads((exported.out_dir / "calibration.cache.json").read_text())
    ranges = {name: tuple(r) for name, r in cache["ranges"].items()}
    root_filters = list(logging.getLogger().filters)
    with caplog.at_level(logging.INFO):
        model = quantize_qdq(exported.out_dir / "model.onnx", ranges, get_method("entropy"), TARGETS["tensorrt"])
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
