"""The manifest as a typed contract: older formats load, this one round-trips, anything else is named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smlp_deploy.artifacts import ARTIFACTS, FORMATS, format_of, kind_of, onnx_artifact
from smlp_deploy.errors import ArtifactError, SmlpDeployError
from smlp_deploy.manifest import FORMAT_VERSION, MANIFEST_NAME, BatchProfile, Manifest
from smlp_deploy.preprocess_config import PreprocessConfig
from smlp_deploy.runtime.backends.registry import default_backend
from smlp_deploy.tensorrt.flavours import FLAVOURS

SAMPLES = Path(__file__).parent / "data" / "manifests"


@pytest.mark.parametrize("version", [1, 2])
def test_committed_manifests_of_every_format_load(version, tmp_path):
    """v1.json was written by smlp-deploy 0.1.0 and v2.json by 0.2.0 (the digits export with --fp16 --int8
    --int8-target both --eval-dir): each release must keep reading them. Both knew TensorRT only."""
    manifest = Manifest.load(SAMPLES / f"v{version}.json")
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.model.name == "smlpnet_test" and manifest.model.num_classes == 10
    assert manifest.model.checkpoint.path == "tests/data/smlpnet_digits.pth" and manifest.model.seed is None
    assert manifest.model.accuracy.top1 == pytest.approx(0.99333, abs=1e-5) and manifest.model.accuracy.dataset
    assert manifest.preprocess == PreprocessConfig.for_image_size(64)
    assert manifest.labels == [str(i) for i in range(10)]
    assert [a.path for a in manifest.artifacts] == ["model.onnx", "model.fp16.onnx", "model.int8.onnx",
                                                    "model.int8.cpu.onnx"]
    int8 = manifest.artifact("model.int8.onnx")
    assert int8.kind is ARTIFACTS["model.int8.onnx"] and int8.target == "tensorrt" and int8.float_precision == "fp16"
    assert int8.parity.n_inputs == 5 and int8.accuracy.n_images == 450
    assert manifest.calibration.method == "percentile" and manifest.calibration.targets == ["tensorrt", "cpu"]
    (engines,) = manifest.engines
    assert engines.flavour == "tensorrt" and engines.status == "skipped"
    # Format 1 did not record the planned engines; its --from-onnx built one per ONNX file that has an engine.
    expected = ["engine.fp32.plan", "engine.fp16.plan", "engine.int8.plan"] if version == 1 else [
        "engine.fp16.plan", "engine.int8.plan"]
    assert engines.engines == expected
    manifest.save(tmp_path)  # re-saved in the current format, it reads back the same
    assert Manifest.load(tmp_path / MANIFEST_NAME) == manifest


def test_a_manifest_from_a_newer_release_is_refused_with_the_fix(tmp_path):
    data = json.loads((SAMPLES / "v2.json").read_text()) | {"format_version": FORMAT_VERSION + 1}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=rf"format version {FORMAT_VERSION + 1}, written by a newer smlp-deploy"
                                            r".*upgrade smlp-deploy"):
        Manifest.load(tmp_path / MANIFEST_NAME)


@pytest.mark.parametrize("edit, where", [
    (lambda m: m["model"].update(num_classes="ten"), r"model\.num_classes: expected int, got str 'ten'"),
    (lambda m: m["model"].pop("image_size"), r"model\.image_size: missing"),
    (lambda m: m["artifacts"][1].update(shape=[1, 3]), r"artifacts\[1\]\.shape: unknown field"),
    (lambda m: m["artifacts"][0]["parity"].update(cosine=True),
     r"artifacts\[0\]\.parity\.cosine: expected int or float"),
    (lambda m: m.update(labels=7), r"labels: 7 fits none of"),
    (lambda m: m.pop("format_version"), r"no valid format_version \(None\)"),
])
def test_malformed_fields_are_named(edit, where, tmp_path):
    data = json.loads((SAMPLES / "v2.json").read_text())
    edit(data)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=where):
        Manifest.load(tmp_path / MANIFEST_NAME)


@pytest.mark.parametrize("name", ["../../engine.fp16.plan", "/etc/x/../model.onnx", "sub/model.onnx", "..", ".", "",
                                  "C:model.onnx", "..\\model.onnx", "model.onnx\0"])
def test_a_file_is_named_by_its_name_alone(name, tmp_path):
    """Each reader joins an artifact's path to the folder: anything but a name would lead it out of the folder."""
    data = json.loads((SAMPLES / "v2.json").read_text())
    data["artifacts"][1]["path"] = name
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=rf"manifest '{re.escape(str(tmp_path / MANIFEST_NAME))}' names "
                                            rf"{re.escape(repr(name))} at artifacts\[1\]\.path, which is not the name "
                                            r"of a file inside its export folder: .*; re-export it"):
        Manifest.load(tmp_path / MANIFEST_NAME)


def test_unreadable_manifests_are_named(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot be read"):
        Manifest.load(tmp_path / MANIFEST_NAME)
    (tmp_path / MANIFEST_NAME).write_text("[]")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        Manifest.load(tmp_path / MANIFEST_NAME)


def test_the_artifact_table_is_consistent():
    for kind in ARTIFACTS.values():
        assert kind_of(kind.file_name) is kind and format_of(kind.file_name) is FORMATS[kind.format]
        engines = [e for e in ARTIFACTS.values() if e.source == kind.file_name]
        assert [e.flavour for e in engines] == (list(FLAVOURS.values()) if kind.builds_engines else [])
        assert all(e.is_engine and e.precision == kind.precision and kind.format == "onnx" for e in engines)
    cpu_form = onnx_artifact("int8", "cpu")
    assert cpu_form.file_name == "model.int8.cpu.onnx" and not cpu_form.builds_engines
    assert format_of("a/b/engine.ENGINE").name == "tensorrt" and format_of("x.pth").name == "checkpoint"
    assert format_of("my.rtx.plan").name == format_of("My.RTX.engine").name == "tensorrt-rtx"
    assert [default_backend(format_of(n)).name for n in ("m.onnx", "e.plan", "e.rtx.plan", "m.pt")] == [
        "onnxruntime", "tensorrt", "tensorrt-rtx", "torch"]
    assert kind_of("notes.txt") is None and format_of("notes.txt") is None


def test_batch_profile_parsing():
    assert BatchProfile.parse("1:8:32") == BatchProfile(1, 8, 32)
    with pytest.raises(SmlpDeployError, match="min:opt:max"):
        BatchProfile.parse("8")
    with pytest.raises(SmlpDeployError, match="min <= opt <= max"):
        BatchProfile.parse("8:4:32")


def test_a_format_3_manifest_loads_without_backend_parity(tmp_path):
    """v3.json was written by the commit before formats 4 (FP8), 5 (parity on other backends) and 6 (the accuracy
    budget) (smlp-export --variant test --image-size 64 --fp16, no engines): it reads as a current manifest with no
    FP8 calibration, no parity on other backends and no budget."""
    manifest = Manifest.load(SAMPLES / "v3.json")
    assert manifest.format_version == FORMAT_VERSION == 6 and manifest.fp8_calibration is None
    assert manifest.accuracy_budget is None
    assert [a.path for a in manifest.artifacts] == ["model.onnx", "model.fp16.onnx"]
    assert all(a.backends is None and a.parity_on("openvino", "bf16") is None for a in manifest.artifacts)
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path / MANIFEST_NAME) == manifest
