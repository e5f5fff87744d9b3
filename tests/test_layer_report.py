"""Where the error enters (issue 31): the layer report matches ONNX tensors to PyTorch modules, leaves the
artifact's own numbers as they were, and on the outlier fixture points at the rescaled channels' layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from smlp_deploy.calibration import TARGETS, calibrated_tensors, compute_ranges, get_method, load_calibration_set
from smlp_deploy.calibration.quantize import quantize_qdq
from smlp_deploy.calibration.tensors import Runner, expose
from smlp_deploy.diagnose.layers import layer_report
from smlp_deploy.errors import ArtifactError
from smlp_deploy.export import Fp8Options, Int8Options, export_model
from smlp_deploy.manifest import Manifest
from smlp_deploy.models import create_model
from smlp_deploy.records import to_json

from .digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, load_split, write_digits
from .outliers import save_checkpoint, with_outliers

# fp16 float parts are computed in fp32 between casts on ONNX Runtime's CPU provider, rounded where a tensor leaves
# such a run, and exposing changes where that is (smlp_deploy/diagnose/layers.py): not bit for bit, said so.
FP16_PARTS = pytest.mark.xfail(strict=True, reason="fp16 parts: ORT's CPU rounds where tensors leave cast runs")
REDUCED = ("model.int8.onnx", "model.int8.cpu.onnx", "model.fp8.onnx",
           pytest.param("model.fp16.onnx", marks=FP16_PARTS))
RESCALED = "stages.2.blocks.1.channel_mix"  # the one channel MLP the fixture of this module rescales


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folders = write_digits(tmp_path_factory.mktemp("digits"))
    inputs, _ = load_split(folders["test"])
    return folders["train"], inputs[:32]


@pytest.fixture(scope="module")
def every_precision(tmp_path_factory, digits) -> Path:
    """The digits model in both INT8 forms and FP8 with fp32 float parts, and in FP16 (64 calibration images)."""
    train, _ = digits
    root = tmp_path_factory.mktemp("all")
    export_model("test", checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                 precisions=("fp32", "fp16"), out_dir=root / "fp16", flavours=(), quiet=True)
    out = export_model("test", checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                        precisions=("fp32", "int8", "fp8"), out_dir=root / "export",
                        int8_options=Int8Options(train, samples=64, targets=("tensorrt", "cpu")),
                        fp8_options=Fp8Options(train, samples=64), flavours=(), quiet=True).out_dir
    shutil.copy(root / "fp16" / "model.fp16.onnx", out / "model.fp16.onnx")
    return out


@pytest.fixture(scope="module")
def one_block_rescaled(tmp_path_factory, digits) -> Path:
    """The fixture with 2 channels of one block at k = 1000: its FP32 export, and the INT8 TensorRT form the export
    refuses (cosine below the gate), quantized from it and written beside it as the export would have."""
    train, _ = digits
    root = tmp_path_factory.mktemp("one-block")
    base = create_model("test", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, checkpoint=CHECKPOINT)
    model, _ = with_outliers(base, 1000, {RESCALED: (5, 17)})
    out = export_model("test", checkpoint=save_checkpoint(model, root / "model.pth"), num_classes=NUM_CLASSES,
                       image_size=IMAGE_SIZE, out_dir=root / "export", flavours=(), quiet=True).out_dir
    fp32 = out / "model.onnx"
    calib = load_calibration_set(train, Manifest.load(out / "manifest.json").preprocess, samples=64, quiet=True)
    ranges = compute_ranges(fp32, calib, get_method("percentile"), calibrated_tensors(onnx.load(str(fp32)), TARGETS),
                            quiet=True)
    onnx.save(quantize_qdq(fp32, ranges, TARGETS["tensorrt"]), str(out / "model.int8.onnx"))
    return out


@pytest.mark.parametrize("artifact", REDUCED)
def test_exposed_tensors_leave_the_artifacts_logits_as_they_were(every_precision, digits, artifact):
    """Every tensor of the graph exposed at once, run as the layer report runs it (no graph optimizations): the
    logits are the artifact's own, bit for bit. With optimizations on they are not (fusions are blocked)."""
    _, inputs = digits
    model = onnx.load(str(every_precision / artifact))
    every = [t for node in model.graph.node for t in node.output if t]
    own = Runner(model, optimized=False).logits(inputs)
    assert np.array_equal(Runner(expose(model, every), optimized=False).logits(inputs), own)
    if artifact == "model.int8.cpu.onnx":  # the QLinear fusions of the CPU form, blocked by exposing
        assert not np.array_equal(Runner(expose(model, every)).logits(inputs), Runner(model).logits(inputs))


def test_the_report_points_at_the_rescaled_layer(one_block_rescaled, digits):
    _, inputs = digits
    report = layer_report(one_block_rescaled, "model.int8.onnx", inputs, detail="layers")
    entry = report.entry()
    assert entry.module == f"{RESCALED}.fc1"
    assert entry.underflow is not None and entry.underflow > 0.5  # 14 of 16 channels round to zero
    before = report.rows[: report.rows.index(entry)]
    assert before and all(row.relative_error < 0.1 for row in before)
    assert entry.relative_error > 0.5  # measured 0.99; the logits keep cosine 0.998: later blocks recover
    blocks = layer_report(one_block_rescaled, "model.int8.onnx", inputs[:8])
    assert blocks.entry().module == "stages.2.blocks.1"
    assert [r.module for r in blocks.rows][:2] == ["stages.0.blocks.0", "stages.1.blocks.0"]
    assert "the error enters at stages.2.blocks.1" in blocks.table()


def test_the_report_as_json_and_plot(one_block_rescaled, digits, tmp_path):
    pytest.importorskip("matplotlib")
    from smlp_deploy.diagnose.plot import plot_layer_report

    report = layer_report(one_block_rescaled, "model.int8.onnx", digits[1][:8])
    data = json.loads(json.dumps(to_json(report)))
    assert data["rows"][0]["module"] == "stages.0.blocks.0" and data["rows"][0]["same_as"] == ["stages.0"]
    assert plot_layer_report(report, tmp_path / "layers.png").stat().st_size > 10_000


def test_an_artifact_the_export_lacks_is_named(one_block_rescaled, digits, tmp_path):
    with pytest.raises(ArtifactError, match=r"'model.fp8.onnx' is not .* there is: model.int8.onnx"):
        layer_report(one_block_rescaled, "model.fp8.onnx", digits[1][:2])
    shutil.copytree(one_block_rescaled, tmp_path / "moved")
    (tmp_path / "moved" / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="not an export folder"):
        layer_report(tmp_path / "moved", "model.int8.onnx", digits[1][:2])
