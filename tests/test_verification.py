"""Verification that can be trusted: non-finite logits never pass the parity gate, whichever precision, and no
manifest holds a token strict JSON refuses."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from smlp_deploy.errors import ParityError
from smlp_deploy.export import export_model
from smlp_deploy.export.parity import THRESHOLDS, compare
from smlp_deploy.export.verification import VERIFICATION_NAME, VerificationSet
from smlp_deploy.manifest import MANIFEST_NAME, Manifest, ParityReport
from smlp_deploy.models import create_model
from smlp_deploy.runtime import load_backend
from smlp_deploy.samples import sample_images

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
