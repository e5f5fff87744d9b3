"""smlp-triton: a repository for every artifact kind, each config.pbtxt parsed with Triton's own schema
(tritonclient's model_config_pb2 + protobuf's text_format, which refuse unknown fields, bad enums and wrong types),
the files beside it, the ensemble's wiring, and the errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from smlp_deploy.artifacts import ARTIFACTS
from smlp_deploy.cli.triton import entry_point
from smlp_deploy.cli.triton import main as triton_main
from smlp_deploy.errors import ArtifactError, InputError, OutputError
from smlp_deploy.fileio import sha256_file
from smlp_deploy.manifest import MANIFEST_NAME, Artifact, Manifest
from smlp_deploy.models.labels import imagenet_labels
from smlp_deploy.serving import write_triton_repository
from smlp_deploy.serving.repository import PLATFORMS
from smlp_deploy.tensorrt.flavours import TENSORRT_RTX

from .conftest import ENGINE_PROFILE

mc = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (extra 'serve')")
text_format = pytest.importorskip("google.protobuf.text_format")

PROFILE = ENGINE_PROFILE  # 1:4:16
NAME = "smlpnet_test"


@pytest.fixture(scope="module")
def export_dir(every_precision_64, tmp_path_factory) -> Path:
    """Every artifact kind: ONNX FP32/FP16/INT8 (both targets)/FP8 from a real export (a copy of conftest's
    every_precision_64, engines for PROFILE), and the engines of both TensorRT flavours (TensorRT for RTX builds
    them here).

    Where a flavour cannot build them (TensorRT without a GPU), the engines are recorded as files whose bytes stand
    in for a plan, with the profile the export would have built: the repository writer copies an engine as opaque
    bytes and reads its profile from the manifest, which is what these tests check. On a GPU host they are real."""
    out = tmp_path_factory.mktemp("triton") / "export"
    shutil.copytree(every_precision_64.out_dir, out)
    manifest = Manifest.load(out / MANIFEST_NAME)
    for engine in [k for k in ARTIFACTS.values() if k.is_engine and not manifest.artifact(k.file_name)]:
        data = f"stands in for a {engine.description} plan".encode()
        (out / engine.file_name).write_bytes(data)
        manifest.record(Artifact(engine.file_name, engine.format, engine.precision, hashlib.sha256(data).hexdigest(),
                                 len(data), target=engine.target, profile=PROFILE, flavour=engine.format))
    manifest.save(out)
    return out


def parse(path: Path):
    """Triton's own parse of a config.pbtxt: raises text_format.ParseError on anything its schema lacks."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def check_ensemble(repository) -> None:
    """Each step's tensors exist on the step model with the ensemble tensor's type and shape; the ensemble's
    input feeds the first step and its output comes from the last (what Triton checks when it loads one)."""
    configs = {m.name: parse(m.directory / "config.pbtxt") for m in repository.models}
    ensemble = configs[repository.image_model.name]
    known = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        for key, value in step.input_map.items():
            assert inputs[key] == known[value], (step.model_name, key)
        for key, value in step.output_map.items():
            known[value] = outputs[key]
    assert {t.name: known[t.name] for t in ensemble.output} == {
        t.name: (t.data_type, list(t.dims)) for t in ensemble.output}


def checksums_hold(version: Path) -> list[str]:
    """The files ``SHA256SUMS`` lists, each checked against its sha256 (as ``sha256sum -c`` would)."""
    listed = [line.split("  ", 1) for line in (version / "SHA256SUMS").read_text().splitlines()]
    assert all(sha256_file(version / name) == digest for digest, name in listed)
    return [name for _, name in listed]


@pytest.mark.parametrize("artifact", list(ARTIFACTS))
def test_repository_for_every_artifact_parses_with_tritons_schema(export_dir, tmp_path, artifact):
    """Each artifact on the Triton backend that loads it: its own (tensorrt_plan, onnxruntime_onnx), or, for a
    TensorRT-for-RTX engine, which no Triton backend loads, the Python backend on a GPU instance."""
    kind = ARTIFACTS[artifact]
    engine, own = kind.is_engine, kind.format in PLATFORMS
    repository = write_triton_repository(export_dir, tmp_path / "repo", artifact=artifact, instances=2,
                                         max_queue_delay_us=100, backend=None if own else "python")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [NAME, f"{NAME}_image", f"{NAME}_preprocess"]
    config = parse(repository.classifier.directory / "config.pbtxt")
    assert config.name == NAME and config.backend == ("" if own else "python")
    assert config.platform == PLATFORMS.get(kind.format, "")
    assert config.max_batch_size == (PROFILE.max if engine else 32)
    (input_,), (output,) = config.input, config.output
    assert (input_.name, input_.data_type, list(input_.dims)) == ("input", mc.TYPE_FP32, [3, 64, 64])
    assert (output.name, output.data_type, list(output.dims)) == ("logits", mc.TYPE_FP32, [1000])
    assert (repository.classifier.directory / output.label_filename).read_text().splitlines() == imagenet_labels()
    assert list(config.dynamic_batching.preferred_batch_size) == ([4, 16] if engine else [])
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_GPU if engine else
                                         mc.ModelInstanceGroup.KIND_CPU, 2)
    assert not config.HasField("optimization")

    version = repository.classifier.directory / "1"
    assert (version / (config.default_model_filename or artifact)).read_bytes() == (export_dir / artifact).read_bytes()
    assert sorted(checksums_hold(version)) == sorted([artifact, MANIFEST_NAME])
    assert (version / MANIFEST_NAME).read_text() == (export_dir / MANIFEST_NAME).read_text()
    assert repository.sha256 == Manifest.load(export_dir / MANIFEST_NAME).artifact(artifact).sha256
    check_ensemble(repository)


def test_an_rtx_engine_is_refused_for_tritons_tensorrt_backend(export_dir, tmp_path):
    with pytest.raises(InputError, match=r"engine\.fp16\.rtx\.plan is a TensorRT for RTX engine, which Triton's own "
                                         r"backends do not load .* serve it through the Python backend") as error:
        write_triton_repository(export_dir, tmp_path, artifact="engine.fp16.rtx.plan")
    assert error.value.parameter == "backend" and not list(tmp_path.iterdir())


def test_python_backend_and_image_models(export_dir, tmp_path):
    repository = write_triton_repository(export_dir, tmp_path, artifact="model.int8.cpu.onnx", backend="python",
                                         max_batch_size=8)
    classifier = parse(repository.classifier.directory / "config.pbtxt")
    assert (classifier.backend, classifier.platform, classifier.max_batch_size) == ("python", "", 8)
    assert classifier.parameters["artifact"].string_value == "model.int8.cpu.onnx"
    assert list(classifier.dynamic_batching.preferred_batch_size) == []
    assert repository.needs_smlp_deploy
    for model, cls in ((repository.classifier, "ClassifierModel"), (repository.models[1], "PreprocessModel")):
        assert f"from smlp_deploy.serving.python_models import {cls} as TritonPythonModel" in (
            model.directory / "1" / "model.py").read_text()
    preprocess = parse(repository.models[1].directory / "config.pbtxt")
    (image,) = preprocess.input
    assert (image.name, image.data_type, list(image.dims), image.allow_ragged_batch) == (
        "image", mc.TYPE_UINT8, [-1], True)
    assert checksums_hold(repository.models[1].directory / "1") == [MANIFEST_NAME]
    ensemble = parse(repository.image_model.directory / "config.pbtxt")
    assert ensemble.platform == "ensemble" and [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        f"{NAME}_preprocess", NAME]
    assert ensemble.output[0].label_filename == "labels.txt"
    assert not list((repository.image_model.directory / "1").iterdir())  # Triton wants it, empty
    check_ensemble(repository)


def test_onnx_on_gpu_with_tensorrt_accelerator_and_no_image_models(export_dir, tmp_path):
    repository = write_triton_repository(export_dir, tmp_path, artifact="model.fp16.onnx", name="tiny-fp16",
                                         device="gpu", tensorrt_accelerator=True, image_input=False)
    assert [m.name for m in repository.models] == ["tiny-fp16"] and repository.image_model is None
    config = parse(tmp_path / "tiny-fp16" / "config.pbtxt")
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}
    assert not repository.needs_smlp_deploy


def test_the_schema_check_fails_on_what_triton_refuses(export_dir, tmp_path):
    """The parse above is a real check: a misspelt field, an unknown enum, a wrong type or a field the message
    lacks (``format`` on an output, which tritonserver itself refuses) each fail."""
    repository = write_triton_repository(export_dir, tmp_path, image_input=False)
    text = (repository.classifier.directory / "config.pbtxt").read_text()
    broken = [text.replace("max_batch_size", "max_batch_sizee"), text.replace("KIND_CPU", "KIND_TPU"),
              text.replace("max_batch_size: 32", 'max_batch_size: "32"'),
              text.replace('label_filename: "labels.txt"', 'label_filename: "labels.txt"\n    format: FORMAT_NCHW')]
    for variant in broken:
        assert variant != text
        with pytest.raises(text_format.ParseError):
            text_format.Parse(variant, mc.ModelConfig())


def test_replaces_its_own_models_only_with_overwrite_and_keeps_other_models(export_dir, tmp_path):
    other = tmp_path / "other_model" / "config.pbtxt"
    other.parent.mkdir(parents=True)
    other.write_text('name: "other_model"\n')
    write_triton_repository(export_dir, tmp_path, artifact="model.onnx")
    before = (tmp_path / NAME / "config.pbtxt").read_text()
    with pytest.raises(OutputError, match="already exist") as error:
        write_triton_repository(export_dir, tmp_path, artifact="model.fp16.onnx")
    assert error.value.parameter == "overwrite"
    assert (tmp_path / NAME / "config.pbtxt").read_text() == before
    write_triton_repository(export_dir, tmp_path, artifact="model.fp16.onnx", overwrite=True)
    assert sorted(p.name for p in (tmp_path / NAME / "1").iterdir()) == ["SHA256SUMS", MANIFEST_NAME,
                                                                        "model.fp16.onnx"]
    assert other.read_text() == 'name: "other_model"\n'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_failed_write_leaves_nothing(export_dir, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the repository should go")
    with pytest.raises(OutputError, match="left as they were"):
        write_triton_repository(export_dir, blocker / "repo")
    assert blocker.read_text() == "a file where the repository should go"


@pytest.fixture
def tampered(export_dir, tmp_path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    return copy


def test_an_artifact_that_changed_or_was_never_built_is_refused(tampered):
    (tampered / "model.fp16.onnx").write_bytes(b"changed after the export")
    with pytest.raises(ArtifactError, match=r"does not match the sha256 recorded in .*manifest\.json: the file "
                                            "changed after it was verified"):
        write_triton_repository(tampered, tampered.parent / "repo", artifact="model.fp16.onnx")
    data = json.loads((tampered / MANIFEST_NAME).read_text())
    data["artifacts"] = [a for a in data["artifacts"] if a["path"] != "engine.fp16.plan"]
    (tampered / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"planned but not built .* smlp-export --from-onnx \. --flavour tensorrt "
                                            r"--batch 1:4:16"):
        write_triton_repository(tampered, tampered.parent / "repo", artifact="engine.fp16.plan")
    assert not (tampered.parent / "repo").exists()


@pytest.mark.parametrize("options, parameter, message", [
    ({"artifact": "model.bin"}, "artifact", "not a file an export writes; this export holds model.onnx"),
    ({"name": "my model"}, "name", "must start with a letter or digit"),
    ({"instances": 0}, "instances", "instances must be a whole number >= 1"),
    ({"max_queue_delay_us": -1}, "max_queue_delay_us", ">= 0"),
    ({"max_batch_size": 0}, "max_batch_size", ">= 1"),
    ({"artifact": "engine.fp16.plan", "max_batch_size": 64}, "max_batch_size", "exceeds the 16"),
    ({"artifact": "engine.fp16.plan", "device": "cpu"}, "device", "runs on a GPU only"),
    ({"artifact": "model.int8.cpu.onnx", "device": "gpu"}, "device", "serve model.int8.onnx"),
    ({"tensorrt_accelerator": True}, "tensorrt_accelerator", "device='gpu'"),
    ({"artifact": "model.fp8.onnx", "device": "gpu", "tensorrt_accelerator": True}, "tensorrt_accelerator",
     "runs precision modes FP32, FP16, INT8, not FP8: serve model.fp8.onnx as a TensorRT engine"),
    ({"backend": "onnxruntime"}, "backend", "'python'"),
])
def test_bad_options_name_the_argument(export_dir, tmp_path, options, parameter, message):
    with pytest.raises(InputError, match=message) as error:
        write_triton_repository(export_dir, tmp_path / "repo", **options)
    assert error.value.parameter == parameter
    assert not (tmp_path / "repo").exists()


def test_not_an_export(tmp_path):
    with pytest.raises(ArtifactError, match=r"has no manifest\.json") as error:
        write_triton_repository(tmp_path, tmp_path / "repo")
    assert error.value.parameter == "export_dir"


def test_cli_writes_and_summarizes(export_dir, tmp_path, capsys):
    assert triton_main([str(export_dir), "--out", str(tmp_path), "--artifact", "engine.int8.plan",
                        "--instances", "3", "--max-queue-delay-us", "500"]) == 0
    printed = capsys.readouterr().out
    assert "smlpnet_test_image" in printed and "3 x KIND_GPU" in printed
    assert f"tritonserver --model-repository {tmp_path}" in printed and "install smlp-deploy" in printed
    assert parse(tmp_path / NAME / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 500


def test_cli_errors_name_the_flag(export_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["smlp-triton", str(export_dir), "--out", str(tmp_path),
                                     "--artifact", "engine.fp16.plan", "--device", "cpu"])
    assert entry_point() == 2
    assert capsys.readouterr().err.startswith("error: --device: engine.fp16.plan is a TensorRT engine")


def test_onnx_on_tritons_openvino_backend_in_bf16(export_dir, tmp_path):
    """Triton's OpenVINO backend takes one precision parameter, HINT_BF16: the config asks for bf16 (which OpenVINO
    keeps as FP32 on a CPU without it), on CPU instances, the ONNX file as the model file."""
    with pytest.warns(UserWarning, match=r"model\.int8\.cpu\.onnx will be served on openvino in bf16, whose parity "
                                         r"its export did not measure"):
        repository = write_triton_repository(export_dir, tmp_path, artifact="model.int8.cpu.onnx", backend="openvino",
                                             precision="bf16", instances=2)
    config = parse(repository.classifier.directory / "config.pbtxt")
    assert (config.backend, config.platform, config.default_model_filename) == ("openvino", "", "model.int8.cpu.onnx")
    assert {k: v.string_value for k, v in config.parameters.items()} == {"HINT_BF16": "YES",
                                                                         "PERFORMANCE_HINT": "LATENCY"}
    (group,) = config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_CPU, 2)
    assert (repository.classifier.directory / "1" / "model.int8.cpu.onnx").read_bytes() == (
        export_dir / "model.int8.cpu.onnx").read_bytes()
    assert repository.classifier.runtime == "openvino"
    check_ensemble(repository)


def test_the_python_backend_opens_the_artifact_with_the_backend_and_precision_asked_for(export_dir, tmp_path):
    with pytest.warns(UserWarning, match="will be served on openvino in bf16"):
        repository = write_triton_repository(export_dir, tmp_path, backend="python", classifier_backend="openvino",
                                             precision="bf16", image_input=False)
    config = parse(repository.classifier.directory / "config.pbtxt")
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "artifact": "model.onnx", "backend": "openvino", "precision": "bf16"}


@pytest.mark.skipif(TENSORRT_RTX.build_unavailable() is not None, reason="needs TensorRT for RTX's engines, built here")
def test_the_python_backend_checks_the_exports_file_from_any_folder(export_dir, tmp_path, monkeypatch):
    """The classifier backend's file check reads the export's engine, not a file of that name in the working
    folder (where there is none: it raised FileNotFoundError before)."""
    monkeypatch.chdir(tmp_path)
    repository = write_triton_repository(export_dir, tmp_path / "repository", artifact="engine.fp16.rtx.plan",
                                         backend="python", classifier_backend="tensorrt-rtx", image_input=False)
    config = parse(repository.classifier.directory / "config.pbtxt")
    assert config.parameters["backend"].string_value == "tensorrt-rtx"


@pytest.mark.parametrize("options, parameter, message", [
    ({"backend": "openvino"}, "precision", "Triton's OpenVINO backend cannot pin FP32: its one precision parameter is "
                                           "HINT_BF16"),
    ({"backend": "openvino", "precision": "fp32"}, "precision", "cannot pin FP32"),
    ({"backend": "openvino", "precision": "bf16", "artifact": "model.int8.onnx"}, "backend",
     r"INT8 Q/DQ form for TensorRT.*open model\.int8\.cpu\.onnx"),
    ({"backend": "openvino", "precision": "bf16", "artifact": "engine.fp16.plan"}, "backend",
     "OpenVINO backend serves ONNX files on the CPU"),
    ({"backend": "openvino", "precision": "bf16", "device": "gpu"}, "device", "ONNX files on the CPU"),
    ({"precision": "bf16"}, "precision", "apply to backend='python'"),
    ({"backend": "python", "classifier_backend": "torch"}, "classifier_backend",
     "classifier_backend 'torch' cannot open model.onnx: choose one of onnxruntime, openvino"),
    ({"backend": "python", "precision": "bf16"}, "precision",
     "precision 'bf16' applies to classifier_backend openvino"),
])
def test_runtime_options_that_cannot_hold_are_refused(export_dir, tmp_path, options, parameter, message):
    with pytest.raises(InputError, match=message) as error:
        write_triton_repository(export_dir, tmp_path / "repo", **options)
    assert error.value.parameter == parameter
    assert not (tmp_path / "repo").exists()


def test_the_python_backend_runs_each_instance_on_its_own_device(export_dir, tmp_path):
    """The arguments Triton gives an instance (its kind and device id) reach the backend: a KIND_CPU instance runs
    on the CPU; a KIND_GPU one runs on its GPU or fails to load saying why, never on the CPU without a word."""
    from google.protobuf.json_format import MessageToJson

    from smlp_deploy.errors import BackendUnavailableError
    from smlp_deploy.runtime.backends.onnxruntime_backend import CUDA, available_providers
    from smlp_deploy.serving.python_models import ClassifierModel

    repository = write_triton_repository(export_dir, tmp_path, backend="python", image_input=False)
    config = MessageToJson(parse(repository.classifier.directory / "config.pbtxt"), preserving_proto_field_name=True)

    def loaded(kind: str, device: str) -> ClassifierModel:
        model = ClassifierModel()
        model.initialize({"model_config": config, "model_repository": str(repository.classifier.directory),
                          "model_version": "1", "model_instance_kind": kind, "model_instance_device_id": device})
        return model

    on_cpu = loaded("CPU", "0")
    assert on_cpu.classifier.backend.device == "cpu"
    on_cpu.finalize()
    if CUDA in available_providers():
        on_gpu = loaded("GPU", "0")
        assert on_gpu.classifier.backend.device == "cuda:0"
        on_gpu.finalize()
    else:
        with pytest.raises(BackendUnavailableError, match=r"^device 'cuda:1' asked for, but this onnxruntime runs on "
                                                          r"the CPU only"):
            loaded("GPU", "1")
