from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from smlp_deploy.cli.export import entry_point, main, parser
from smlp_deploy.errors import BackendUnavailableError, ParityError
from smlp_deploy.export import BatchProfile, BuildOptions, build_from_onnx, export_model
from smlp_deploy.export.onnx_graph import op_counts
from smlp_deploy.export.parity import check, compare
from smlp_deploy.export.verification import VerificationSet
from smlp_deploy.fileio import sha256_file
from smlp_deploy.runtime.backends import OnnxRuntimeBackend
from smlp_deploy.tensorrt.flavours import FLAVOURS, TENSORRT

from .conftest import assert_steps_counted
from .reliability import snapshot


@pytest.fixture(scope="module")
def exported(fp16_export):
    return fp16_export


def test_manifest_meets_the_contract(exported):
    manifest = json.loads(exported.manifest_path.read_text())
    model = manifest["model"]
    assert model["name"] == "smlpnet_test" and model["variant"] == "test"
    assert model["image_size"] == 64 and model["num_classes"] == 1000 and model["checkpoint"] is None
    assert model["params"] > 0 and model["macs"] > 0
    assert manifest["preprocess"]["input_size"] == 64 and manifest["preprocess"]["interpolation"] == "bicubic"
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "fp16"}
    for artifact in [a for a in manifest["artifacts"] if a["format"] == "onnx"]:
        assert artifact["sha256"] == sha256_file(exported.out_dir / artifact["path"])
        assert set(artifact["parity"]) >= {"max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement",
                                           "top5_agreement", "n_inputs"}
        assert artifact["parity"]["n_inputs"] == 16
    engines = {e["flavour"]: e for e in manifest["engines"]}
    assert set(engines) == {"tensorrt", "tensorrt-rtx"}
    for flavour, engine in engines.items():
        assert engine["status"] in ("skipped", "built")
        assert engine["engines"] == [f"engine.{p}{FLAVOURS[flavour].engine_suffix}" for p in ("fp32", "fp16")]
        assert any(c.startswith(f"smlp-export --from-onnx . --flavour {flavour}") for c in engine["commands"])
        if engine["status"] == "skipped":
            assert engine["reason"]
    assert any(c.startswith("trtexec --onnx=") and "--stronglyTyped" in c for c in engines["tensorrt"]["commands"])
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxsim", "tensorrt", "tensorrt-rtx"}
    assert not list(exported.out_dir.glob("*.part"))


def test_onnx_graph_io_and_dynamic_batch(exported):
    proto = onnx.load(exported.out_dir / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 20
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, 64, 64]
    ops = op_counts(proto)
    assert ops["LayerNormalization"] == 5  # one node per block: opset >= 17
    assert ops["Gelu"] == 3 * 5 and ops["Erf"] == 0  # opset 20: each GELU is one node, not five
    assert ops["Reshape"] == 0 and ops["Constant"] == 0 and ops["Identity"] == 0
    backend = OnnxRuntimeBackend(exported.out_dir / "model.onnx")
    for n in (1, 3):
        assert backend.run(np.zeros((n, 3, 64, 64), np.float32)).shape == (n, 1000)


def test_fp16_graph_keeps_float32_io_and_fp32_norms(exported):
    proto = onnx.load(exported.out_dir / "model.fp16.onnx")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {i.name: i for i in proto.graph.initializer}
    conv_weights = [weights[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    norms = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "ReduceMean")]
    assert norms
    for node in norms:
        data = node.input if node.op_type == "LayerNormalization" else node.input[:1]  # ReduceMean's axes: int64
        assert all(types[t] == onnx.TensorProto.FLOAT for t in list(data) + list(node.output) if t), node.name


def test_parity_figures_meet_thresholds(exported):
    fp32, fp16 = exported.reports["model.onnx"], exported.reports["model.fp16.onnx"]
    assert fp32.rel_max_abs_diff <= 1e-4 and fp32.top1_agreement == 1.0
    assert fp16.cosine >= 0.999 and fp16.top1_agreement >= 0.99


def test_a_broken_artifact_is_caught(exported, tmp_path):
    proto = onnx.load(exported.out_dir / "model.onnx")
    target = next(i for i in proto.graph.initializer if i.name.endswith("fuse.weight"))
    broken = numpy_helper.to_array(target) * 1.5
    target.CopyFrom(numpy_helper.from_array(broken, target.name))
    path = tmp_path / "broken.onnx"
    onnx.save(proto, path)
    verification = VerificationSet.load(exported.out_dir / "verification.npz")
    report = compare(verification.reference, OnnxRuntimeBackend(path).run(verification.inputs))
    with pytest.raises(ParityError, match=r"broken\.onnx \(fp32\) fails parity.*max abs diff"):
        check(report, "fp32", path.name)
    check(compare(verification.reference, OnnxRuntimeBackend(exported.out_dir / "model.onnx").run(verification.inputs)),
          "fp32", "model.onnx")


def test_a_flavour_that_cannot_build_here_is_refused_before_any_work(tmp_path):
    unavailable = [f for f in FLAVOURS.values() if f.build_unavailable()]
    if not unavailable:
        pytest.skip("every TensorRT flavour builds here")
    for flavour in unavailable:
        with pytest.raises(BackendUnavailableError, match=f"cannot build {flavour.title} engines here") as info:
            export_model("test", image_size=64, out_dir=tmp_path / "out", flavours=(flavour.name,), quiet=True)
        assert info.value.parameter == "flavours"
        assert not (tmp_path / "out").exists()  # refused before any work
    if len(unavailable) == len(FLAVOURS):
        with pytest.raises(BackendUnavailableError, match="no TensorRT engine can be built here") as info:
            export_model("test", image_size=64, out_dir=tmp_path / "out", require_engine=True, quiet=True)
        assert info.value.parameter == "require_engine"
    export_model("test", image_size=64, out_dir=tmp_path, quiet=True, flavours=())
    with pytest.raises(BackendUnavailableError):
        build_from_onnx(tmp_path, flavours=(unavailable[0].name,), quiet=True)


@pytest.mark.parametrize("precisions, do_simplify", [(("fp32",), False), (("fp16",), True)])
def test_progress_counts_the_planned_steps(precisions, do_simplify, tmp_path, capsys):
    export_model("test", image_size=64, precisions=precisions, do_simplify=do_simplify, out_dir=tmp_path)
    assert_steps_counted(capsys.readouterr().err)


def test_rerun_into_the_same_directory(tmp_path):
    first = export_model("test", image_size=64, out_dir=tmp_path, quiet=True)
    second = export_model("test", image_size=64, out_dir=tmp_path, quiet=True, flavours=())
    assert [a.path for a in second.manifest.artifacts] == ["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.onnx", "verification.npz"]
    assert first.manifest.artifacts[0].sha256 == second.manifest.artifacts[0].sha256


def test_replacing_the_default_folders_export_is_announced_before_any_work(tmp_path, capsys, monkeypatch):
    """The README's examples run one after another write to exports/<model>/: the second says, before its first
    step, which files of the first it will replace (issue 33); an export into a folder the user named does not."""
    monkeypatch.chdir(tmp_path)
    assert main(["--variant", "test", "--image-size", "64", "--fp16"]) == 0
    first = snapshot(tmp_path / "exports" / "smlpnet_test")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning raised: nothing may have been done before it
        with pytest.raises(UserWarning) as warned:
            main(["--variant", "test", "--image-size", "64", "--flavour", "none"])
    assert str(warned.value) == ("this export replaces the one in exports/smlpnet_test (model.onnx, model.fp16.onnx, "
                                 "engine.fp16.rtx.plan) once it passes its checks; give --out DIR to keep that one")
    assert capsys.readouterr().err == "" and snapshot(tmp_path / "exports" / "smlpnet_test") == first
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder named with --out is the user's choice: no word
        export_model("test", image_size=64, out_dir=tmp_path / "exports" / "smlpnet_test", flavours=(), quiet=True)


def test_export_help_groups_its_options():
    """smlp-export --help in the groups a user looks for (issue 33), every option in one of them."""
    groups = {g.title: [a.option_strings[0] for a in g._group_actions] for g in parser()._action_groups}
    assert list(groups) == ["positional arguments", "options", "model", "precisions", "calibration", "verification",
                            "engines", "output"]
    assert groups["options"] == ["-h"] and groups["positional arguments"] == []
    assert groups["precisions"] == ["--fp32", "--fp16", "--int8", "--fp8"]
    assert "--max-top1-drop" in groups["verification"] and "--from-onnx" in groups["engines"]
    assert groups["output"] == ["--out", "--quiet"]


def test_cli_summary_and_errors(tmp_path, capsys, monkeypatch):
    assert main(["--variant", "test", "--image-size", "64", "--fp16", "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "model.fp16.onnx" in printed and "manifest:" in printed
    monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "test", "--image-size", "100", "--out", str(tmp_path)])
    assert entry_point() == 2
    assert "multiple of 32" in capsys.readouterr().err


@pytest.mark.xdist_group("tiny")
def test_tiny_fp16_export(every_precision_tiny):
    """The quick start's main job on the real tiny variant, end to end on the CPU (the suite's one tiny export, which
    test_tensorrt_rtx.py and test_tensorrt_support.py read too)."""
    assert every_precision_tiny.reports["model.fp16.onnx"].cosine >= 0.999
    assert every_precision_tiny.manifest.model.params == 24_123_584


@pytest.mark.tensorrt
def test_engines_are_built_and_verified(tmp_path):
    cache = tmp_path / "timing.cache"
    build = BuildOptions(BatchProfile(1, 4, 8), workspace_mib=1024, timing_cache=cache)
    result = export_model("test", image_size=64, precisions=("fp32", "fp16"), out_dir=tmp_path, build=build,
                          require_engine=True, quiet=True)
    engines = [a for a in result.manifest.artifacts if a.format == "tensorrt"]
    assert {e.precision for e in engines} == {"fp32", "fp16"}
    for engine in engines:
        assert engine.profile == BatchProfile(1, 4, 8) and engine.status == "verified"
        assert engine.tensorrt_version and engine.gpu.compute_capability == engine.compute_capabilities[0]
    assert result.manifest.engine_status("tensorrt").status == "built" and cache.stat().st_size > 0
    rebuilt = build_from_onnx(tmp_path, build, flavours=("tensorrt",), quiet=True)  # reuses the timing cache
    assert rebuilt.manifest.engine_status("tensorrt").status == "built"


def test_verification_set_from_an_older_export_is_named(exported, tmp_path):
    from smlp_deploy.errors import ArtifactError

    current = VerificationSet.load(exported.out_dir / "verification.npz")
    assert current.n_photos == 5 and len(current.for_precision("int8")[0]) == 5
    old = tmp_path / "verification.npz"
    np.savez(old, inputs=current.inputs, reference=current.reference)
    with pytest.raises(ArtifactError, match=r"older smlp-deploy.*export again with smlp_deploy\.export\.export_model") \
            as info:
        VerificationSet.load(old)
    assert "export again with smlp-export to" in info.value.render({})  # as smlp-export --from-onnx says it


def test_a_moved_export_folder_works_where_it_lands(tmp_path, capsys, monkeypatch):
    """The CPU-to-GPU workflow: an export copied to another path keeps working there, and what its manifest
    tells a GPU owner to run refers to the folder it is in."""
    from smlp_deploy import Classifier
    from smlp_deploy.calibration.options import Int8Options
    from smlp_deploy.cli.eval import main as eval_main
    from smlp_deploy.samples import sample_images

    first = tmp_path / "made-here"
    export_model("test", image_size=64, precisions=("fp32", "fp16", "int8"), out_dir=first, quiet=True,
                 int8_options=Int8Options(sample_images()[0].parent))
    moved = tmp_path / "elsewhere" / "export"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    assert str(first) not in (moved / "manifest.json").read_text()
    manifest = json.loads((moved / "manifest.json").read_text())
    for engines in manifest["engines"]:
        assert any(c.startswith("smlp-export --from-onnx . ") for c in engines["commands"])
    assert manifest["calibration"]["cache"] == "calibration.cache.json"
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        assert Classifier(moved / name).predict(str(sample_images()[0])).label
    data = tmp_path / "val" / "tabby"
    data.mkdir(parents=True)
    shutil.copy(sample_images()[1], data)
    assert eval_main([str(moved / "model.int8.onnx"), "--data", str(data.parent), "--quiet"]) == 0
    if TENSORRT.build_unavailable() is None:
        pytest.skip("TensorRT is here: --from-onnx builds the engines (test_engines_are_built_and_verified)")
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["smlp-export", "--from-onnx", str(moved), "--flavour", "tensorrt"])
    assert entry_point() == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --flavour: cannot build TensorRT engines here: TensorRT is not installed (pip "
                            "install 'smlp-deploy[trt]' on a GPU host)")
    assert "--require-engine" not in error
