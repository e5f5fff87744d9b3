"""The remedies of issue 31 on a model where INT8 really loses (tests/outliers.py) and on the digits model itself:
smoothing keeps FP32 and recovers INT8, float fallback meets the budget with the outlier layers alone, and neither
changes anything on a model that needs no remedy; what they write still obeys TensorRT's Q/DQ rules and builds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import pytest
import torch

from smlp_deploy.calibration import TARGETS, calibrated_tensors, compute_ranges, get_method, load_calibration_set
from smlp_deploy.calibration.budget import AccuracyBudget, HeldOut
from smlp_deploy.calibration.fallback import search_fallback
from smlp_deploy.calibration.quantize import quantize_qdq
from smlp_deploy.calibration.smoothing import channel_maxima, smooth, smoothing_sites
from smlp_deploy.calibration.tensors import Runner
from smlp_deploy.errors import CalibrationError, InputError
from smlp_deploy.export import export_model
from smlp_deploy.models import create_model

from .digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, load_split, write_digits
from .outliers import K_VALUES, choose_channels, max_relative_difference, save_checkpoint, with_outliers

BUDGET = AccuracyBudget(max_top1_drop=0.5)  # the issue's: half a point of top-1 against FP32 on the held-out digits


class Digits(NamedTuple):
    train: Path
    inputs: np.ndarray
    labels: np.ndarray


class Case(NamedTuple):
    fp32: Path
    held_out: HeldOut
    calib: object


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Digits:
    folders = write_digits(tmp_path_factory.mktemp("digits"))
    return Digits(folders["train"], *load_split(folders["test"]))


@pytest.fixture(scope="module")
def base():
    return create_model("test", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, checkpoint=CHECKPOINT)


def fixture_case(root: Path, model, digits: Digits) -> Case:
    """``model``'s FP32 export (the project's own), 256 calibration images and the held-out split."""
    export = export_model("test", checkpoint=save_checkpoint(model, root / "model.pth"), num_classes=NUM_CLASSES,
                          image_size=IMAGE_SIZE, out_dir=root / "export", flavours=(), quiet=True)
    fp32 = export.out_dir / "model.onnx"
    calib = load_calibration_set(digits.train, export.manifest.preprocess, quiet=True)
    reference = Runner(onnx.load(str(fp32))).logits(digits.inputs)
    return Case(fp32, HeldOut(digits.inputs, digits.labels, reference), calib)


@pytest.fixture(scope="module")
def cases(tmp_path_factory, base, digits) -> dict[str, Case]:
    """The digits model and the fixture at k = 1000 (2 channels a block, seed 0), each exported once."""
    outliers, _ = with_outliers(base, 1000, choose_channels(base))
    return {"digits": fixture_case(tmp_path_factory.mktemp("digits-model"), base, digits),
            "k1000": fixture_case(tmp_path_factory.mktemp("k1000"), outliers, digits)}


def quantized_score(source: Path, case: Case, target: str, keep: frozenset[str] = frozenset()):
    model = onnx.load(str(source))
    ranges = compute_ranges(source, case.calib, get_method("percentile"), calibrated_tensors(model, TARGETS),
                            quiet=True)
    quantized = quantize_qdq(source, ranges, TARGETS[target], keep_float=keep)
    return case.held_out.evaluate(Runner(quantized).logits(case.held_out.inputs), BUDGET)


def smoothed(case: Case, out: Path) -> tuple[Path, list]:
    model = onnx.load(str(case.fp32))
    sites = smoothing_sites(model)
    maxima, samples = channel_maxima(str(case.fp32), case.calib, sites)
    result, records = smooth(model, maxima, samples, sites)
    onnx.save(result, str(out))
    return out, records


@pytest.mark.parametrize("k", K_VALUES)
def test_the_fixture_keeps_fp32(base, digits, k):
    before = {name: value.clone() for name, value in base.state_dict().items()}
    model, outliers = with_outliers(base, k, choose_channels(base))
    assert len(outliers.channels) == 5 and all(len(c) == 2 for c in outliers.channels.values())
    assert max_relative_difference(base, model, torch.from_numpy(digits.inputs[:32])) < 1e-6  # measured 2.6e-7
    assert all(torch.equal(value, before[name]) for name, value in base.state_dict().items())  # base as it was
    norm = model.get_submodule("stages.0.blocks.0.channel_mix.norm").weight
    assert torch.allclose(norm[list(outliers.channels["stages.0.blocks.0.channel_mix"])],
                          k * before["stages.0.blocks.0.channel_mix.norm.weight"][[10, 12]])


def test_smoothing_keeps_fp32_and_recovers_int8_on_the_fixture(cases, tmp_path):
    case = cases["k1000"]
    path, records = smoothed(case, tmp_path / "smoothed.onnx")
    assert [r.alpha is not None for r in records] == [True] * 5 + [False]  # every fc1, not the head
    assert all(r.spread_before > 500 and r.spread_after < 2 for r in records[:5])
    after = Runner(onnx.load(str(path))).logits(case.held_out.inputs)
    reference = case.held_out.reference
    assert np.abs(after - reference).max() / np.abs(reference).max() < 1e-5
    for target in TARGETS:
        assert not quantized_score(case.fp32, case, target).meets  # 91.6% and 90.9% top-1 against FP32's 99.3%
        assert quantized_score(path, case, target).meets


def fallback(case: Case, ranking: str, target: str = "tensorrt"):
    model = onnx.load(str(case.fp32))
    ranges = compute_ranges(case.fp32, case.calib, get_method("percentile"), calibrated_tensors(model, TARGETS),
                            quiet=True)
    return search_fallback(model, lambda keep: quantize_qdq(case.fp32, ranges, TARGETS[target], keep_float=keep),
                           case.held_out, replace(BUDGET, ranking=ranking))


def fc1_layers(fp32: Path) -> set[str]:
    model = onnx.load(str(fp32))
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node
            if n.op_type == "MatMul" and made_by.get(n.input[0]) == "LayerNormalization"}


def test_fallback_keeps_only_outlier_layers_in_float(cases):
    """The error-added ranking: 4 evaluations, 2 of the 5 fc1 layers kept in float (NNCF 3.4 keeps 3 on the same
    budget: docs/benchmarks/int8-accuracy-control-digits.json)."""
    case = cases["k1000"]
    result = fallback(case, "error-added")
    assert not result.before.meets and result.met
    assert 0 < len(result.keep_float) <= 2 and set(result.keep_float) <= fc1_layers(case.fp32)
    assert set(s.layer for s in result.ranked[:5]) == fc1_layers(case.fp32)  # the ranking finds the outlier layers


def test_fallback_keeps_everything_quantized_on_the_digits_model(cases):
    result = fallback(cases["digits"], "error-added", "cpu")
    assert result.met and result.keep_float == [] and result.evaluations == 1 and result.ranked == []


def test_keep_float_names_nodes_of_the_float_model(cases):
    case = cases["digits"]
    model = onnx.load(str(case.fp32))
    ranges = compute_ranges(case.fp32, case.calib, get_method("minmax"), calibrated_tensors(model, TARGETS),
                            quiet=True)
    layer = sorted(fc1_layers(case.fp32))[0]
    quantized = quantize_qdq(case.fp32, ranges, TARGETS["tensorrt"], keep_float={layer})
    made_by = {o: n.op_type for n in quantized.graph.node for o in n.output}
    (node,) = [n for n in quantized.graph.node if n.name == layer]
    assert [made_by.get(t) for t in node.input] == ["LayerNormalization", None]  # no DQ on either input
    others = [n for n in quantized.graph.node if n.op_type == "MatMul" and n.name != layer]
    assert all(made_by.get(n.input[1]) == "DequantizeLinear" for n in others)
    with pytest.raises(CalibrationError, match="not a Conv, MatMul or Gemm node"):
        quantize_qdq(case.fp32, ranges, TARGETS["tensorrt"], keep_float={"layer_norm"})


def test_a_budget_says_what_is_wrong():
    with pytest.raises(InputError, match=r"give max_top1_drop=0\.5 or min_agreement=99\.5, not both"):
        AccuracyBudget(max_top1_drop=1, min_agreement=99)
    with pytest.raises(InputError, match="between 0 and 100"):
        AccuracyBudget(min_agreement=101)
    with pytest.raises(InputError, match="a top-1 drop is judged on the labeled folder of eval_dir='DIR'"):
        AccuracyBudget(max_top1_drop=1, holdout_dir=Path("held-out"))
    with pytest.raises(InputError, match="ranks layers by error-added or one-at-a-time"):
        AccuracyBudget(max_top1_drop=1, ranking="random")
    assert AccuracyBudget(max_top1_drop=1).float_layers_allowed(70) == 7  # a tenth, rounded up
    with pytest.raises(InputError, match="needs labeled images"):
        HeldOut(np.zeros((1, 3, 8, 8), np.float32), None, np.zeros((1, 10))).check(BUDGET)


def test_a_budget_counts_images():
    """0.5 point on 450 images allows 2 images lost, never 3, whatever the rounding."""
    reference = np.eye(10)[np.arange(450) % 10]
    held_out = HeldOut(np.zeros((450, 1)), np.arange(450) % 10, reference)
    worse = reference.copy()
    worse[:3] = np.roll(worse[:3], 1, axis=1)
    assert held_out.evaluate(worse, BUDGET).hits == 447 and not held_out.evaluate(worse, BUDGET).meets
    worse[2] = reference[2]
    assert held_out.evaluate(worse, BUDGET).meets
    agreement = AccuracyBudget(min_agreement=99.5)  # at least 448 of 450
    assert held_out.evaluate(worse, agreement).needed == 448


def test_remedied_graphs_obey_tensorrt_and_build(cases, tmp_path):
    """Smoothed, with an fc1 layer kept in float, fp16 float parts (the TensorRT form as the export writes it with
    FP16): every operator-table check passes, and TensorRT for RTX builds its engine."""
    from smlp_deploy.export.precision import convert_to_fp16
    from smlp_deploy.tensorrt.builder import BuildOptions, build_engine
    from smlp_deploy.tensorrt.flavours import TENSORRT_RTX

    from .tensorrt_support import check_graph
    from .tensorrt_tables import load_operator_tables

    case = cases["k1000"]
    source, _ = smoothed(case, tmp_path / "smoothed.onnx")
    model = onnx.load(str(source))
    ranges = compute_ranges(source, case.calib, get_method("percentile"), calibrated_tensors(model, TARGETS),
                            quiet=True)
    kept = sorted(fc1_layers(case.fp32))[:1]
    graph = convert_to_fp16(quantize_qdq(source, ranges, TARGETS["tensorrt"], keep_float=kept))
    for table in load_operator_tables():
        assert check_graph(graph, table) == [], table.release
    if TENSORRT_RTX.missing() is not None:
        pytest.skip(f"needs {TENSORRT_RTX.missing()}")
    onnx.save(graph, str(tmp_path / "model.int8.onnx"))
    build_engine(TENSORRT_RTX, tmp_path / "model.int8.onnx", tmp_path / "engine.int8.rtx.plan", IMAGE_SIZE,
                 BuildOptions())
    assert (tmp_path / "engine.int8.rtx.plan").stat().st_size > 100_000
