"""The export within an accuracy budget (issue 31), end to end: on the outlier fixture (tests/outliers.py) both INT8
forms meet a 0.5 point top-1 budget and pass the parity gate for every k of the issue and several channel choices;
on the digits model the budget changes nothing; a budget that cannot be met fails with what it reached and leaves
nothing; ``smlp-debug layers`` and ``smlp-compare`` run on the digits export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from torch import nn

from smlp_deploy import AccuracyBudget
from smlp_deploy.bench.choice import PrecisionReport, compare_precisions, plot_choice
from smlp_deploy.calibration.quantize import TARGETS
from smlp_deploy.export import Fp8Options, Int8Options, export_model
from smlp_deploy.export.int8 import quantize
from smlp_deploy.export.parity import THRESHOLDS, Thresholds
from smlp_deploy.export.remedies import SMOOTHED_NAME
from smlp_deploy.fileio import sha256_file
from smlp_deploy.models import create_model
from smlp_deploy.models.smlpnet import AxisLinear
from smlp_deploy.records import from_json, to_json

from .conftest import PYTHON_WORDS
from .digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, write_digits
from .outliers import choose_channels, save_checkpoint, with_outliers
from .tensorrt_support import check_graph
from .tensorrt_tables import load_operator_tables

BUDGET = AccuracyBudget(max_top1_drop=0.5)  # the issue's: half a point of top-1 against FP32 on the held-out digits
INT8_FORMS = ("model.int8.onnx", "model.int8.cpu.onnx")
# Every k of the issue, three channel choices among them (the seed that draws the rescaled channels), and the INT8
# gate's cosine floor: the export's own, or 0.99, which the CPU form smoothed misses (0.9875 on its worst photo),
# so that float fallback runs in the export. The sweep of every k with every choice is
# docs/benchmarks/budgeted_export.py.
# k, the channels' seed, and an INT8 gate stricter than the export's own: at 0.995 the TensorRT form smoothed
# (cosine 0.9938) meets the budget but not the gate, and float fallback takes it past (0.9956 with 4 layers in float).
# The CPU form cannot reach 0.995 (0.9911 at most), so that case exports the TensorRT form alone.
CASES = [(100, 1, None), (150, 2, None), (250, 0, None), (1000, 1, 0.995)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    return write_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def base():
    return create_model("test", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, checkpoint=CHECKPOINT)


def budgeted(checkpoint: Path, out: Path, digits: dict[str, Path], *, fp16_fp8: bool = False,
             forms: tuple[str, ...] = INT8_FORMS):
    """The export ``smlp-export --int8 --int8-target both --max-top1-drop 0.5 --eval-dir`` makes (no engines)."""
    targets = tuple(t for t, name in zip(("tensorrt", "cpu"), INT8_FORMS, strict=True) if name in forms)
    return export_model("test", checkpoint=checkpoint, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                        precisions=("fp32", "fp16", "int8", "fp8") if fp16_fp8 else ("fp32", "int8"), out_dir=out,
                        int8_options=Int8Options(digits["train"], targets=targets),
                        fp8_options=Fp8Options(digits["train"]) if fp16_fp8 else None, eval_dir=digits["test"],
                        budget=BUDGET, flavours=(), quiet=True)


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory, digits) -> Path:
    """The digits model in FP16, both INT8 forms and FP8 (float parts fp16), within the budget."""
    return budgeted(CHECKPOINT, tmp_path_factory.mktemp("digits-export") / "export", digits, fp16_fp8=True).out_dir


@pytest.mark.parametrize("k, seed, floor", CASES,
                         ids=[f"k{k}-channels{seed}" + (f"-floor{floor}" if floor else "") for k, seed, floor in CASES])
def test_the_budgeted_export_meets_the_budget_on_the_fixture(k, seed, floor, base, digits, tmp_path, monkeypatch):
    if floor is not None:
        monkeypatch.setitem(THRESHOLDS, "int8", Thresholds(min_cosine=floor))
    forms = INT8_FORMS if floor is None else INT8_FORMS[:1]
    model, outliers = with_outliers(base, k, choose_channels(base, seed=seed))
    result = budgeted(save_checkpoint(model, tmp_path / "model.pth"), tmp_path / "export", digits, forms=forms)
    manifest, budget = result.manifest, result.manifest.accuracy_budget
    assert budget is not None and (budget.metric, budget.points, budget.images) == ("top1-drop", 0.5, 450)
    fp32_top1 = manifest.model.accuracy.top1  # PyTorch's, measured by the export on the whole held-out split
    for name in forms:
        artifact = manifest.artifact(name)
        assert fp32_top1 - artifact.accuracy.top1 <= 0.005 + 1e-9, name  # the budget, as the export measured it
        assert THRESHOLDS["int8"].failures(artifact.parity) == []  # the gate the export applied, on record
        outcome = next(o for o in budget.outcomes if o.artifact == name)
        assert outcome.steps[-1].meets and [s.remedy for s in outcome.steps][:2] == ["none", "smoothing"]
        assert k < 250 or not outcome.steps[0].meets  # from k = 250 INT8 as quantized misses it: 93.8-95.1%
        for layer in outcome.float_layers:  # named by the PyTorch module the layer is
            assert isinstance(base.get_submodule(layer.module), (nn.Conv2d, nn.Linear, AxisLinear)), layer
        if floor is not None:  # smoothed, it meets the budget but not the gate
            assert outcome.steps[1].gate and outcome.steps[2].remedy == "fallback" and outcome.float_layers
            assert outcome.evaluations > 1 and artifact.parity.cosine >= floor
    # Smoothing finds exactly the rescaled layers, by their module path.
    assert sorted(s.module for s in budget.smoothing) == sorted(f"{mlp}.fc1" for mlp in outliers.channels)
    # model.onnx stays the FP32 artifact; the forms are calibrated on the smoothed copy, which is not left behind.
    assert manifest.artifact("model.onnx").parity.rel_max_abs_diff <= THRESHOLDS["fp32"].max_rel_diff
    cache = json.loads((result.out_dir / "calibration.cache.json").read_text())
    assert cache["key"]["model_sha256"] != sha256_file(result.out_dir / "model.onnx")
    assert not (result.out_dir / SMOOTHED_NAME).exists()
    graph = onnx.load(str(result.out_dir / "model.int8.onnx"))  # TensorRT's rules (its engine built from such a
    for table in load_operator_tables():  # graph: tests/test_accuracy_control.py)
        assert check_graph(graph, table) == [], table.release


def test_on_the_digits_model_the_budget_changes_nothing(digits_export):
    """Nothing smoothed, nothing kept in float: the artifacts are those of an export without a budget, quantized from
    model.onnx with the ranges calibrated on it (so their accuracy is unchanged)."""
    from smlp_deploy.manifest import Manifest

    manifest = Manifest.load(digits_export / "manifest.json")
    budget = manifest.accuracy_budget
    assert budget.smoothing == []
    assert [o.artifact for o in budget.outcomes] == [*INT8_FORMS, "model.fp8.onnx"]
    assert all([s.remedy for s in o.steps] == ["none"] and o.steps[0].meets and o.float_layers == []
               for o in budget.outcomes)
    cache = json.loads((digits_export / "calibration.cache.json").read_text())
    assert cache["key"]["model_sha256"] == sha256_file(digits_export / "model.onnx")
    ranges = {name: (low, high) for name, (low, high) in cache["ranges"].items()}
    for target in TARGETS.values():
        expected = quantize(digits_export / "model.onnx", ranges, Int8Options(Path()), target,
                            fp16=target.fp16_float_parts)
        assert onnx.load(str(digits_export / target.artifact.file_name)) == expected, target.name


def test_a_budget_that_cannot_be_met_fails_with_what_it_reached(digits, tmp_path, monkeypatch, capsys):
    """Every image as FP32 classifies it, at most one layer in float, on random weights (near-tied logits): the
    export fails naming what each remedy reached and what to try, in the command's words, and writes nothing."""
    from smlp_deploy.cli import export

    argv = ["--variant", "test", "--image-size", "64", "--num-classes", "10", "--int8", "--calib-dir",
            str(digits["train"]), "--calib-samples", "64", "--min-agreement", "100", "--max-float-layers", "1",
            "--budget-images", "200", "--flavour", "none", "--out", str(tmp_path / "export"), "--quiet"]
    monkeypatch.setattr("sys.argv", ["smlp-export", *argv])
    assert export.entry_point() == 2
    err = capsys.readouterr().err
    for part in ("error: --min-agreement: model.int8.onnx misses the accuracy budget (at least 100% top-1 agreement "
                 "with FP32, on 200 images of", "kept in float the most layers allowed, 1: stages.",
                 "--max-float-layers 2", "--calib-samples 128", f"{tmp_path / 'export'} was not created"):
        assert part in err, err
    assert re.search(r"as quantized \d+\.\d\d% \(\d+ right, 200 needed\); with float fallback", err), err
    assert not PYTHON_WORDS.findall(err), err
    assert list(tmp_path.iterdir()) == []  # no folder, no staging folder


def test_the_layer_report_command(digits_export, digits, tmp_path, monkeypatch, capsys):
    from smlp_deploy.cli import debug

    plot = tmp_path / "layers.png"
    monkeypatch.setattr("sys.argv", ["smlp-debug", "layers", str(digits_export), "model.int8.cpu.onnx",
                                     str(digits["test"]), "--samples", "4", "--json", "--plot", str(plot)])
    assert debug.entry_point() == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["artifact"] == "model.int8.cpu.onnx" and report["images"] == 4
    assert [row["module"] for row in report["rows"]][:2] == ["stages.0.blocks.0", "stages.1.blocks.0"]
    assert report["logits_cosine"] > 0.99 and plot.stat().st_size > 10_000


def test_the_precision_report_on_the_digits_export(digits_export, digits, tmp_path):
    from smlp_deploy.manifest import Manifest

    report = compare_precisions(digits_export, digits["test"], max_top1_drop=0.5, iters=5, warmup=1, quiet=True,
                                log=lambda line: None)
    manifest = Manifest.load(digits_export / "manifest.json")
    assert [r.artifact for r in report.rows] == [a.path for a in manifest.artifacts]  # every one: no engines here
    for row in report.rows:  # smlp-eval's accuracy: the same figures the export recorded
        assert row.top1 == manifest.artifact(row.artifact).accuracy.top1
    noted = {r.artifact for r in report.rows if r.note}
    assert noted == {"model.int8.onnx", "model.fp8.onnx"}  # TensorRT's forms, timed on ONNX Runtime
    chosen = next(r for r in report.rows if r.artifact == report.choice)
    eligible = [r for r in report.rows if r.within_budget and not r.note]
    assert chosen in eligible and chosen.throughput_ips == max(r.throughput_ips for r in eligible)
    front = [r for r in report.rows if r.pareto]
    assert front and not noted & {r.artifact for r in front}
    assert all(not (o.throughput_ips > r.throughput_ips and o.top1 > r.top1) for r in front for o in eligible)
    assert from_json(PrecisionReport, json.loads(json.dumps(to_json(report)))) == report
    assert plot_choice(report, tmp_path / "choice.png").stat().st_size > 10_000
