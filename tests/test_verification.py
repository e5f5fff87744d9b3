"""Verification that can be trusted: non-finite logits never pass the parity gate, whichever precision, no
manifest holds a token strict JSON refuses, and the runtime never hands out a non-finite score without a word."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from smlp_deploy import Classifier
from smlp_deploy.batch.stages import ClassifierReplica
from smlp_deploy.cli.predict import main as predict_main
from smlp_deploy.errors import ParityError, ScoreError
from smlp_deploy.export import export_model
from smlp_deploy.export.parity import THRESHOLDS, compare
from smlp_deploy.export.verification import VerificationSet
from smlp_deploy.export_folder import VERIFICATION_NAME
from smlp_deploy.fileio import sha256_file
from smlp_deploy.manifest import MANIFEST_NAME, Manifest, ParityReport
from smlp_deploy.models import create_model
from smlp_deploy.runtime import load_backend
from smlp_deploy.samples import sample_images

from .conftest import photo_batch

POISONED = 10  # logits per input set to NaN or inf, of 1000


def poisoned(source, target, value: float):
    """``source`` with ``value`` added to POISONED of its 1000 logits: an ONNX graph that really computes NaN or
    inf there, on every input, whatever its precision."""
    model = onnx.load(str(source))
    (output,) = model.graph.output
    offset = np.zeros((1, 1000), np.float32)
    offset[0, 100 : 100 + POISONED] = value
    model.graph.initializer.append(numpy_helper.from_array(offset, "poison"))
    clean = f"{output.name}_clean"
    for node in model.graph.node:
        node.output[:] = [clean if name == output.name else name for name in node.output]
    model.graph.node.append(helper.make_node("Add", [clean, "poison"], [output.name]))
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", ["model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.cpu.onnx",
                                  "model.fp8.onnx"])
def test_nonfinite_logits_fail_verification_in_every_precision(every_precision_64, tmp_path, name, value):
    """The gate the export and smlp-export --verify-engines run, on a real graph computing NaN or inf: refused,
    naming the artifact, how many values and on which inputs (INT8 is held to the photographs, the others to the
    random tensors too)."""
    export = every_precision_64.out_dir
    verification = VerificationSet.load(export / VERIFICATION_NAME)
    precision = every_precision_64.manifest.artifact(name).precision
    inputs = len(verification.for_precision(precision)[0])
    with load_backend(poisoned(export / name, tmp_path / name, value), device="cpu") as backend, \
            pytest.raises(ParityError) as refused:
        verification.parity(backend, precision, name)
    photos = ", ".join(p.name for p in sample_images()[:5])
    assert str(refused.value).startswith(f"{name} gives {POISONED * inputs} non-finite logits (NaN or inf) of "
                                         f"{1000 * inputs}, on {inputs} of {inputs} verification inputs: {photos}")


def test_a_nan_that_reached_a_report_misses_every_threshold():
    """Thresholds read ``not (value within bound)``: NaN compares false with everything, so ``cosine < floor``
    would have let it through (as it did for INT8 and FP8; FP32 and FP16 too, for NaN in some logits only)."""
    report = ParityReport(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 16)
    for precision, thresholds in THRESHOLDS.items():
        assert thresholds.failures(report), precision


def test_nonfinite_references_are_named_as_such():
    reference = np.ones((3, 4))
    reference[1, 2] = np.inf
    with pytest.raises(ParityError, match=r"^the PyTorch reference gives 1 non-finite logits \(NaN or inf\) of 12, "
                                          r"on 1 of 3 verification inputs: b$"):
        compare(reference, np.ones((3, 4)), artifact="model.onnx", names=["a", "b", "c"])


def test_a_model_that_computes_nan_is_refused_before_any_file(tmp_path):
    model = create_model("test", image_size=64)
    with torch.no_grad():
        model.head.fc.bias[7] = math.nan
    torch.save(model.state_dict(), tmp_path / "nan.pth")
    with pytest.raises(ParityError, match=r"^the PyTorch model gives 16 non-finite logits \(NaN or inf\) of 16000, on "
                                          r"16 of 16 verification inputs: astronaut\.jpg, "):
        export_model("test", checkpoint=tmp_path / "nan.pth", image_size=64, out_dir=tmp_path / "export",
                     flavours=(), quiet=True)
    assert not (tmp_path / "export").exists()


def strict(text: str):
    """JSON as the standard defines it: NaN and Infinity are not tokens of it."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_manifests_are_strict_json(every_precision_64, tmp_path):
    manifest = strict((every_precision_64.out_dir / MANIFEST_NAME).read_text())
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "fp16", "int8", "fp8"}
    broken = Manifest.load(every_precision_64.out_dir / MANIFEST_NAME)
    broken.artifacts[0].parity = ParityReport(math.nan, 0.0, 0.0, 1.0, 1.0, 1.0, 16)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        broken.save(tmp_path)
    assert not (tmp_path / MANIFEST_NAME).exists()


@pytest.fixture(scope="module")
def half_nan(random_export, tmp_path_factory, photos):
    """A copy of the random export whose model.onnx computes NaN scores for the photographs darker than their
    median, and the usual ones for the rest: ``logits + 0 * log(mean(input) - t)`` in the graph itself, re-recorded
    in its manifest (so the Classifier loads it as verified). Returns the folder and the photos that turn NaN."""
    folder = tmp_path_factory.mktemp("half-nan") / "export"
    shutil.copytree(random_export, folder)
    means = photo_batch(64).mean(axis=(1, 2, 3))
    threshold = float(np.median(means))
    model = onnx.load(str(folder / "model.onnx"))
    (graph_input,), (output,) = model.graph.input, model.graph.output
    for node in model.graph.node:
        node.output[:] = ["clean" if name == output.name else name for name in node.output]
    model.graph.initializer.extend([numpy_helper.from_array(np.array(threshold, np.float32), "poison_threshold"),
                                    numpy_helper.from_array(np.array(0.0, np.float32), "poison_zero"),
                                    numpy_helper.from_array(np.array([1, 2, 3], np.int64), "poison_axes")])
    model.graph.node.extend([
        helper.make_node("ReduceMean", [graph_input.name, "poison_axes"], ["poison_mean"], keepdims=0),
        helper.make_node("Sub", ["poison_mean", "poison_threshold"], ["poison_above"]),
        helper.make_node("Log", ["poison_above"], ["poison_log"]),
        helper.make_node("Mul", ["poison_log", "poison_zero"], ["poison"]),
        helper.make_node("Unsqueeze", ["poison", "poison_axis"], ["poison_column"]),
        helper.make_node("Add", ["clean", "poison_column"], [output.name]),
    ])
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "poison_axis"))
    onnx.save(model, str(folder / "model.onnx"))
    manifest = Manifest.load(folder / MANIFEST_NAME)
    manifest.record(replace(manifest.artifact("model.onnx"), sha256=sha256_file(folder / "model.onnx")))
    manifest.save(folder)
    return folder, [p for p, m in zip(photos, means, strict=True) if m <= threshold]


def test_the_classifier_names_the_images_whose_scores_are_not_finite(half_nan, photos):
    folder, dark = half_nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        classifier = Classifier(folder / "model.onnx")
    with classifier:
        fine = [p for p in photos if p not in dark]
        assert all(np.isfinite(p.score) for p in classifier.predict([str(p) for p in fine]))
        with pytest.raises(ScoreError) as refused:
            classifier.predict([str(p) for p in photos])
        named = [p.name for p in photos if f"({p})" in str(refused.value)]
        assert named == [p.name for p in dark] and "returned non-finite scores (NaN or inf)" in str(refused.value)
        with pytest.raises(ScoreError, match=r"for image .*: 1000 of 1000 logits"):
            classifier.logits(str(dark[0]))


def test_smlp_predict_gives_those_images_an_error_row_and_the_others_their_scores(half_nan, photos, capsys):
    folder, dark = half_nan
    assert predict_main([str(folder / "model.onnx"), str(photos[0].parent), "--json"]) == 1
    rows = {Path(r["image"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {name for name, row in rows.items() if "error" in row} == {p.name for p in dark}
    assert all("non-finite scores" in rows[p.name]["error"] for p in dark)
    assert all(len(row["topk"]) == 5 for row in rows.values() if "error" not in row)


def test_ray_replicas_give_those_images_an_error_row(half_nan, photos):
    """The actor step of predict_dataset, run as Ray runs it on a preprocessed batch (no Ray needed for it)."""
    pytest.importorskip("pyarrow", reason="the ray extra's pyarrow")
    folder, dark = half_nan
    batch = {"path": np.array([str(p) for p in photos], dtype=object), "image": photo_batch(64),
             "error": np.full(len(photos), "", dtype=object)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = ClassifierReplica(str(folder / "model.onnx"), 3, {})(batch).to_pylist()
    assert [Path(r["path"]).name for r in rows if r["error"]] == [p.name for p in dark]
    assert all("non-finite scores" in r["error"] and r["topk"] == [] for r in rows if r["error"])
    assert all(len(r["topk"]) == 3 and r["error"] is None for r in rows if not r["error"])
