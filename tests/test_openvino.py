"""The openvino backend on this CPU: FP32 by default, bf16 on request and only where the CPU has it, what it computes
in read back from the compiled model, parity recorded by the export (bf16 against PyTorch at the FP16 thresholds, the
INT8 CPU form against ONNX Runtime on the same graph), and the TensorRT form of INT8 refused."""

from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from smlp_deploy import Classifier
from smlp_deploy.calibration.quantize import conv_sums
from smlp_deploy.cli.export import main as export_main
from smlp_deploy.cli.predict import main as predict_main
from smlp_deploy.cpu import openvino_cpu_capabilities
from smlp_deploy.errors import ArtifactError, InputError, ParityError
from smlp_deploy.export import compare
from smlp_deploy.export.openvino_parity import OpenVINOPlan, check, measure
from smlp_deploy.export.parity import SAME_GRAPH, THRESHOLDS
from smlp_deploy.export.verification import VerificationSet
from smlp_deploy.manifest import MANIFEST_NAME, Manifest
from smlp_deploy.runtime import load_backend

from .conftest import SKIMAGE_DATA
from .digits import CHECKPOINT as DIGITS

ov = pytest.importorskip("openvino", reason="needs OpenVINO (extra 'openvino')")
CAPABILITIES = openvino_cpu_capabilities()
needs_bf16 = pytest.mark.skipif("BF16" not in CAPABILITIES, reason=f"needs a CPU with bf16 (OpenVINO finds "
                                                                   f"{', '.join(CAPABILITIES)})")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """The digits model trained here (real weights: top-1 ties are rare) in every ONNX form, with OpenVINO parity
    recorded, through the command line as a user runs it."""
    out = tmp_path_factory.mktemp("openvino") / "export"
    assert export_main(["--variant", "test", "--checkpoint", str(DIGITS), "--num-classes", "10", "--image-size", "64",
                        "--fp16", "--int8", "--int8-target", "both", "--calib-dir", str(SKIMAGE_DATA),
                        "--calib-samples", "32", "--flavour", "", "--openvino", "--out", str(out), "--quiet"]) == 0
    return out


def test_fp32_by_default_though_openvinos_own_default_is_bf16_here(export_dir):
    with load_backend(export_dir / "model.onnx", "openvino") as backend:
        assert backend.compute_precision == "fp32" and backend.describe().startswith("openvino ")
        assert "CPU fp32 (model.onnx)" in backend.describe()
        assert {precision for _, precision in backend.layer_precisions} == {"f32"}
    if "BF16" in CAPABILITIES:  # why the default is set: OpenVINO alone would compute this FP32 file in bf16
        assert ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.bf16


@needs_bf16
def test_bf16_runs_bf16_kernels_and_differs_from_fp32(export_dir):
    x = VerificationSet.load(export_dir / "verification.npz").inputs
    with load_backend(export_dir / "model.onnx", "openvino", precision="bf16") as bf16, \
            load_backend(export_dir / "model.onnx", "openvino") as fp32:
        assert bf16.compute_precision == "bf16" and "CPU bf16" in bf16.describe()
        # The W @ x MatMuls (a constant first operand, OpenVINO's MatMul layer) stay f32 in its bf16 mode.
        assert set(bf16.layer_precisions) == {("Convolution", "bf16"), ("FullyConnected", "bf16"), ("MatMul", "f32")}
        report = compare(fp32.run(x), bf16.run(x))
    assert 1e-4 < report.rel_max_abs_diff < 5e-2 and not THRESHOLDS["fp16"].failures(report), report


def test_the_int8_cpu_form_runs_fused_int8_kernels(export_dir):
    """What OpenVINO's CPU plugin compiles the CPU form into (its runtime model: each node's layerType,
    runtimePrecision and the ONNX nodes it runs): every Conv/MatMul/Gemm an int8 kernel, each residual Add of a
    Conv's output fused into that Conv's int8 kernel, no zero-point Convert passes, and values entering int8 in
    the fp32 op that makes them (LayerNorm, bias and GELU), or sharing a Concat's scale: the only FakeQuantize pass
    of its own is the input image's. The residual Add after the channel MLP stays an fp32 Eltwise
    (calibration/quantize.py says why). The earlier uint8 form ran its ``W @ x`` MatMuls in fp32 behind 35
    Converts and 11 FakeQuantizes."""
    model = onnx.load(str(export_dir / "model.onnx"))
    with load_backend(export_dir / "model.int8.cpu.onnx", "openvino") as backend:
        heavy = sum(backend.layer_precisions.values())
        assert heavy == sum(n.op_type in ("Conv", "MatMul", "Gemm") for n in model.graph.node)
        assert f"CPU int8 ({heavy} of {heavy} Convolution/FullyConnected/MatMul layers), float parts fp32" in \
            backend.describe()
        assert {precision for _, precision in backend.layer_precisions} == {"i8"}
        runtime = [op.get_rt_info() for op in backend.compiled.get_runtime_model().get_ops()]
    layer = {name: (info["layerType"].astype(str), info["runtimePrecision"].astype(str)) for info in runtime
             for name in info["originalLayersNames"].astype(str).split(",")}
    sums = [model.graph.node[i].name for i in conv_sums(model)]
    assert len(sums) == 5 and {layer[name] for name in sums} == {("Convolution", "i8")}
    constants = {i.name for i in model.graph.initializer}
    others = [n.name for n in model.graph.node if n.op_type == "Add" and not constants & set(n.input)
              and n.name not in sums]
    assert len(others) == 5 and {layer[name] for name in others} == {("Eltwise", "f32")}
    kinds = Counter(info["layerType"].astype(str) for info in runtime)
    assert kinds["Convert"] == 0 and kinds["FakeQuantize"] == 1, kinds


def test_the_export_records_openvino_parity(export_dir):
    manifest = Manifest.load(export_dir / MANIFEST_NAME)
    precisions = OpenVINOPlan.here().precisions
    recorded = {(a.path, c.precision): c for a in manifest.artifacts for c in a.backends or []}
    assert set(recorded) == {(name, p) for name in ("model.onnx", "model.fp16.onnx") for p in precisions} | {
        ("model.int8.cpu.onnx", "fp32")}  # INT8 with FP32 float parts only; not the TensorRT form at all
    for (name, precision), check_ in recorded.items():
        assert check_.backend == "openvino" and check_.version == ov.get_version().split("-")[0] and check_.cpu
        expected = SAME_GRAPH if "int8" in name else "fp16" if precision == "bf16" or "fp16" in name else "fp32"
        assert check_.thresholds == expected and not THRESHOLDS[expected].failures(check_.parity), (name, check_)
        assert check_.reference == ("onnxruntime" if "int8" in name else "pytorch")
        assert check_.parity.n_inputs == (5 if "int8" in name else 16)
    if "BF16" in CAPABILITIES:
        bf16 = recorded[("model.onnx", "bf16")].parity
        assert bf16.cosine > 0.9999 and bf16.top1_agreement == 1.0 and bf16.rel_max_abs_diff > 1e-4  # bf16 for real
    assert recorded[("model.onnx", "fp32")].parity.rel_max_abs_diff < 1e-5


def test_a_failing_parity_stops_the_export_with_its_numbers(export_dir):
    """The check is real: the fp16 thresholds applied to a record of logits that are not the model's fail."""
    verification = VerificationSet.load(export_dir / "verification.npz")
    verification.reference = verification.reference[::-1].copy()  # another image's logits for each image
    records = measure(export_dir / "model.onnx", Manifest.load(export_dir / MANIFEST_NAME).artifact(
        "model.onnx").kind, verification, ("fp32",))
    with pytest.raises(ParityError, match=r"model\.onnx on openvino in fp32 fails parity against pytorch \(fp32 "
                                          r"thresholds\): max abs diff"):
        check(records, "model.onnx")


def test_openvino_on_the_tensorrt_form_is_wrong_so_it_is_refused(export_dir):
    """OpenVINO 2026.4 computes model.int8.onnx (signed activations) wrongly: the refusal stands while this holds."""
    with pytest.raises(InputError, match=r"model\.int8\.onnx is the INT8 Q/DQ form for TensorRT.*open "
                                         r"model\.int8\.cpu\.onnx") as error:
        Classifier(export_dir / "model.int8.onnx", backend="openvino")
    assert error.value.parameter == "backend"
    verification = VerificationSet.load(export_dir / "verification.npz")
    photos, _ = verification.for_precision("int8")
    with load_backend(export_dir / "model.int8.onnx", "onnxruntime") as onnxruntime:
        expected = onnxruntime.run(photos)
    compiled = ov.Core().compile_model(str(export_dir / "model.int8.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert compare(expected, compiled(photos)[0]).cosine < 0.9, "OpenVINO computes the TensorRT form now: lift the ban"


def test_a_precision_whose_parity_was_not_recorded_is_said(export_dir, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    for artifact in data["artifacts"]:
        artifact.pop("backends", None)
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"model\.int8\.cpu\.onnx runs on openvino as int8, float parts fp32, whose "
                                         r"parity its export did not measure: re-export with smlp-export --openvino"):
        Classifier(copy / "model.int8.cpu.onnx", backend="openvino")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Classifier(copy / "model.onnx", backend="openvino")  # FP32 on an FP32 file: nothing to say
        Classifier(export_dir / "model.int8.cpu.onnx", backend="openvino")  # recorded by the export
    if "BF16" not in CAPABILITIES:
        return
    with pytest.warns(UserWarning, match=r"model\.onnx runs on openvino as fp32 computed in bf16, whose parity"):
        Classifier(copy / "model.onnx", backend="openvino", precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = Classifier(export_dir / "model.onnx", backend="openvino", precision="bf16")
    assert repr(clf) == (f"Classifier({str(export_dir / 'model.onnx')!r}: backend openvino, device cpu, fp32 computed "
                         "in bf16, max batch 32, 10 labels (0, 1, 2, ...))")
    assert clf.describe().endswith("CPU bf16 (model.onnx)")


@needs_bf16
def test_eight_threads_sharing_one_classifier_equal_sequential_use(export_dir, photos):
    items = [[str(p)] * (1 + i % 4) for i, p in enumerate(photos * 8)]
    with Classifier(export_dir / "model.onnx", backend="openvino", precision="bf16") as clf:
        sequential = [clf.logits(chunk) for chunk in items]
        with ThreadPoolExecutor(max_workers=8) as pool:
            threaded = list(pool.map(clf.logits, items))
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_precision_is_checked_before_anything_loads(export_dir):
    cases = [
        (dict(backend="openvino", precision="fp16"), "precision", "precision 'fp16' is not one backend 'openvino' "
                                                                   "computes in: it takes fp32, bf16"),
        (dict(precision="bf16"), "precision", "precision applies to backends openvino; .* runs on onnxruntime"),
        (dict(backend="openvino", device="cuda"), "device", "device 'cuda' is not one backend 'openvino' runs on: "
                                                            "it takes cpu"),
        (dict(backend="openvino", cuda_graphs=True), "cuda_graphs", "cuda_graphs applies to backends tensorrt"),
    ]
    for options, parameter, message in cases:
        with pytest.raises(InputError, match=message) as error:
            Classifier(export_dir / "model.onnx", **options)
        assert error.value.parameter == parameter


def test_a_broken_onnx_file_is_an_artifact_error(tmp_path, export_dir):
    """A file that is no ONNX model is named for what it is, as ONNX Runtime's is; a damaged one gets OpenVINO's
    own reason."""
    text = tmp_path / "notes.onnx"
    text.write_bytes(b"not an onnx file")
    with pytest.raises(ArtifactError, match=r"notes\.onnx' is not an ONNX model: it is text \('not an onnx file'\)"):
        load_backend(text, "openvino")
    broken = tmp_path / "model.onnx"
    data = (export_dir / "model.onnx").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"model\.onnx' cannot be loaded by OpenVINO"):
        load_backend(broken, "openvino")


def test_predict_cli_with_openvino_bf16(export_dir, photos, capsys):
    precision = "bf16" if "BF16" in CAPABILITIES else "fp32"
    assert predict_main([str(export_dir / "model.onnx"), str(photos[0].parent), "--backend", "openvino",
                         "--precision", precision]) == 0
    assert f"5 image(s) with openvino {ov.get_version().split('-')[0]} CPU {precision} (model.onnx)" in \
        capsys.readouterr().out


def test_the_photos_agree_with_onnxruntime(export_dir, photos):
    """FP32 on OpenVINO is the artifact's arithmetic: the same logits as ONNX Runtime to 1e-5 of their scale."""
    files = [str(p) for p in photos]
    with Classifier(export_dir / "model.onnx") as onnxruntime, \
            Classifier(export_dir / "model.onnx", backend="openvino") as openvino:
        expected, got = onnxruntime.logits(files), openvino.logits(files)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
