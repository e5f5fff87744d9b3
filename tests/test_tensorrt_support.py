"""Static proof of what TensorRT will accept, without TensorRT: every exported graph against ONNX-TensorRT's
operator table for each release kept in tests/data/tensorrt, and the manifest's trtexec line against trtexec's
options; each check is also shown to catch what it is for."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from smlp_deploy.calibration import TARGETS
from smlp_deploy.calibration.options import Fp8Options, Int8Options
from smlp_deploy.export import export_model, fp8
from smlp_deploy.export.int8 import calibrate, quantize, read_calibration_images
from smlp_deploy.export.onnx_graph import export_onnx, save_model, simplify
from smlp_deploy.export.precision import convert_to_fp16
from smlp_deploy.models import PreprocessConfig, create_model
from smlp_deploy.samples import sample_images
from smlp_deploy.tensorrt.builder import BuildOptions, trtexec_command
from smlp_deploy.tensorrt.flavours import TENSORRT_RTX, import_tensorrt

from .tensorrt_support import binding_problems, check_graph, module_names, trtexec_problems, unknown_names
from .tensorrt_tables import BINDINGS_JSON, OPERATORS_JSON, TRTEXEC_JSON, load_operator_tables

TABLES = load_operator_tables()
VARIANTS = ("test", "tiny", "small", "base")
# xdist groups: the tiny graphs are read from the tiny export its other readers share; small and base (26 s and 28 s
# to make) each run on a worker of their own choosing.
GROUPS = {"tiny": "tiny", "small": "graphs-small", "base": "graphs-base"}
FORMS = ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.fp32-parts.onnx", "model.fp8.onnx",
         "model.fp8.fp32-parts.onnx")


def write_graphs(variant: str, out: Path, *, cpu_form: bool = False, fp32: Path | None = None
                 ) -> dict[str, onnx.ModelProto]:
    """The graphs an export writes for ``variant`` at 224 (random weights), made by the export's own steps without
    its parity checks: FP32 simplified, FP16, and the TensorRT INT8 and FP8 forms with fp32 and with fp16 float
    parts (``quantize(..., fp16=True)`` is the first through ``convert_to_fp16``), calibrated on the bundled photos
    with minmax (ranges do not change the graph); with ``cpu_form``, the CPU runtimes' INT8 form too. ``fp32``: the
    simplified FP32 model of an export of ``variant`` at 224, taken as it is instead of exported again."""
    if fp32 is None:
        torch.manual_seed(0)
        fp32 = out / "model.onnx"
        save_model(simplify(export_onnx(create_model(variant), out / "exported.onnx")).model, fp32)
    graphs = {"model.onnx": onnx.load(str(fp32))}
    graphs["model.fp16.onnx"] = convert_to_fp16(graphs["model.onnx"])
    # The caches in ``out``, never beside a shared export's model.onnx.
    options = Int8Options(sample_images()[0].parent, samples=len(sample_images()), method="minmax",
                          targets=tuple(TARGETS), cache=out / "calibration.cache.json")
    preprocess = PreprocessConfig()
    ranges, _ = calibrate(fp32, read_calibration_images(options, preprocess, quiet=True), preprocess, options,
                          say=lambda _: None, quiet=True)
    graphs["model.int8.fp32-parts.onnx"] = quantize(fp32, ranges, options, TARGETS["tensorrt"], fp16=False)
    graphs["model.int8.onnx"] = convert_to_fp16(graphs["model.int8.fp32-parts.onnx"])
    fp8_options = Fp8Options(options.calib_dir, samples=options.samples, cache=out / "calibration.fp8.cache.json")
    fp8_ranges, _ = calibrate(fp32, read_calibration_images(fp8_options, preprocess, quiet=True), preprocess,
                              fp8_options, say=lambda _: None, quiet=True)
    graphs["model.fp8.fp32-parts.onnx"] = fp8.quantize(fp32, fp8_ranges, fp16=False)
    graphs["model.fp8.onnx"] = convert_to_fp16(graphs["model.fp8.fp32-parts.onnx"])
    if cpu_form:
        graphs["model.int8.cpu.onnx"] = quantize(fp32, ranges, options, TARGETS["cpu"], fp16=False)
    return graphs


@pytest.fixture(scope="session")
def graph_store(tmp_path_factory) -> Path:
    """Each variant's graphs, written once a session: an xdist worker tears module fixtures down whenever its queue
    of tests runs dry, and making small's and base's again took 31 s and 35 s (make test, 2026-12-01)."""
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module", params=[pytest.param(v, marks=pytest.mark.xdist_group(GROUPS[v])) if v in GROUPS else v
                                        for v in VARIANTS])
def graphs(request, graph_store):
    """The test variant's are ``test_graphs``; the tiny variant's FP32 model is the one the suite's tiny export
    wrote (conftest's every_precision_tiny); small and base are exported here."""
    variant = request.param
    if variant == "test":
        return variant, request.getfixturevalue("test_graphs")
    folder = graph_store / variant
    if not folder.exists():
        fp32 = request.getfixturevalue("every_precision_tiny").out_dir / "model.onnx" if variant == "tiny" else None
        work = graph_store / f"{variant}.partial"
        (work / "forms").mkdir(parents=True)
        for form, model in write_graphs(variant, work, fp32=fp32).items():
            onnx.save(model, str(work / "forms" / form))
        work.rename(folder)
    return variant, {form: onnx.load(str(folder / "forms" / form)) for form in FORMS}


@pytest.mark.parametrize("table", TABLES, ids=[f"trt{t.release}" for t in TABLES])
def test_every_exported_graph_is_in_the_table(graphs, table):
    variant, models = graphs
    for form in FORMS:
        problems = check_graph(models[form], table)
        assert not problems, f"{variant} {form} against TensorRT {table.release}:\n" + "\n".join(problems)


def test_the_cpu_form_is_not_for_tensorrt(test_graphs):
    """``model.int8.cpu.onnx`` is the CPU runtimes' form (per-channel ``W @ x`` weights, Q/DQ into residual Adds),
    never built into an engine: the check rejects it, naming the node and the rule."""
    problems = check_graph(test_graphs["model.int8.cpu.onnx"], TABLES[0])
    assert problems and all("per-channel weight feeds input 0 of MatMul node" in p and
                            "where TensorRT takes weights per tensor only" in p for p in problems)


def test_the_tables_name_their_source():
    data = json.loads(OPERATORS_JSON.read_text())
    for table in data["tables"]:
        source = table["source"]
        assert source["repository"] == "onnx/onnx-tensorrt" and source["file"] == "docs/operators.md"
        assert len(source["sha256"]) == 64 and (source["commit"] or source["retrieved"])
    releases = json.loads(TRTEXEC_JSON.read_text())["releases"]
    assert {r["release"].split(".")[0] for r in releases} == {"10", "11"}
    assert all(len(r["source"]["commit"]) == 40 for r in releases)
    assert {t.release.split(".")[0] for t in TABLES} == {"10"} and "11.x" in TABLES[-1].stands_for


@pytest.fixture(scope="module")
def test_graphs(tmp_path_factory):
    """The ``test`` variant's graphs, small enough to edit by hand, with the CPU INT8 form."""
    return write_graphs("test", tmp_path_factory.mktemp("edits"), cpu_form=True)


def test_the_table_standing_for_11_allows_what_10_1_allows(test_graphs):
    """The 10.15 table stands for 11.x (no 11.x operators.md is reachable): for every op the exported graphs
    use, its row lists the types 10.1's lists and no restriction 10.1's does not."""
    by_release = {t.release: t.operators for t in TABLES}
    used = {node.op_type for name in FORMS for node in test_graphs[name].graph.node}
    for op in sorted(used):
        old, new = by_release["10.1"][op], by_release["10.15"][op]
        assert set(new.types) >= set(old.types) and new.restrictions in ("", old.restrictions), op


def _edited(model: onnx.ModelProto, edit) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    edit(copy)
    return copy


def _first(graph, op_type, where=lambda node: True):
    return next(n for n in graph.node if n.op_type == op_type and where(n))


def _nonzero_zero_point(model):
    graph = model.graph
    dq = _first(graph, "DequantizeLinear")
    zero_point = next(i for i in graph.initializer if i.name == dq.input[2])
    zero_point.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zero_point) + 3, zero_point.name))


def _unsupported_op(model):
    gemm = _first(model.graph, "Gemm")
    model.graph.node.append(helper.make_node("Unique", [gemm.output[0]], ["unique_values"], name="dedupe"))


def _custom_domain_op(model):
    gemm = _first(model.graph, "Gemm")
    model.graph.node.append(helper.make_node("FusedGemm", [gemm.output[0]], ["fused"], name="ort_fused",
                                             domain="com.microsoft"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _scale_from_activation(model):
    dq = _first(model.graph, "DequantizeLinear")
    dq.input[1] = model.graph.input[0].name


def _layer_norm_statistics(model):
    norm = _first(model.graph, "LayerNormalization")
    norm.output.extend(["mean", "inv_std_dev"])


@pytest.mark.parametrize("edit, expected", [
    (_nonzero_zero_point, "DequantizeLinear node '{dq}': zero point"),
    (_unsupported_op, "Unique node 'dedupe': Unique is marked unsupported"),
    (_custom_domain_op, "FusedGemm node 'ort_fused': com.microsoft.FusedGemm is not in the table"),
    (_scale_from_activation, "is not a constant"),
    (_layer_norm_statistics, "only the first output is supported"),
], ids=["zero-point", "unsupported-op", "custom-domain", "scale-not-constant", "layernorm-outputs"])
def test_the_check_catches(test_graphs, edit, expected):
    model = test_graphs["model.int8.fp32-parts.onnx"]
    assert not check_graph(model, TABLES[-1])
    problems = check_graph(_edited(model, edit), TABLES[-1])
    dq = _first(model.graph, "DequantizeLinear").name
    assert any(expected.format(dq=dq) in p for p in problems), problems


def _fp8_int8_zero_point(model):
    q = _first(model.graph, "QuantizeLinear")
    zero_point = next(i for i in model.graph.initializer if i.name == q.input[2])
    zero_point.CopyFrom(numpy_helper.from_array(np.zeros((), np.int8), zero_point.name))


def _fp8_nonzero_zero_point(model):
    dq = _first(model.graph, "DequantizeLinear")
    zero_point = next(i for i in model.graph.initializer if i.name == dq.input[2])
    zero_point.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(zero_point).shape, 0.5,
                                                        ml_dtypes.float8_e4m3fn), zero_point.name))


def _fp8_per_channel_activation(model):
    """An activation's per-tensor scale replaced by one per channel of its [N, C, H, W] tensor."""
    q = _first(model.graph, "QuantizeLinear", lambda n: n.input[0] != model.graph.input[0].name)
    dq = _first(model.graph, "DequantizeLinear", lambda n: n.input[0] == q.output[0])
    channels = 16
    for node in (q, dq):
        node.attribute.append(helper.make_attribute("axis", 1))
    scale = next(i for i in model.graph.initializer if i.name == q.input[1])
    zero_point = next(i for i in model.graph.initializer if i.name == q.input[2])
    scale.CopyFrom(numpy_helper.from_array(np.full(channels, numpy_helper.to_array(scale), np.float16), scale.name))
    zero_point.CopyFrom(numpy_helper.from_array(np.zeros(channels, ml_dtypes.float8_e4m3fn), zero_point.name))


def _fp8_into_an_add(model):
    dq = _first(model.graph, "DequantizeLinear", lambda n: n.input[0].endswith("_fp8") and "axis" not in
                {a.name for a in n.attribute})
    add = _first(model.graph, "Add")
    add.input[0] = dq.output[0]


def _fp32_scale_into_half(model):
    """An fp16 scale on a tensor that the edit makes fp32: its Q and DQ see mismatched types."""
    q = _first(model.graph, "QuantizeLinear")
    cast = helper.make_node("Cast", [q.input[0]], ["as_fp32"], name="to_fp32", to=onnx.TensorProto.FLOAT)
    model.graph.node.insert(list(model.graph.node).index(q), cast)
    q.input[0] = "as_fp32"


@pytest.mark.parametrize("edit, expected", [
    (_fp8_int8_zero_point, "is INT8, not FP8"),
    (_fp8_nonzero_zero_point, "is not all zeros"),
    (_fp8_per_channel_activation, "which is not a weight: TensorRT takes activations per tensor only"),
    (_fp8_into_an_add, "TensorRT for RTX runs FP8 for matrix multiplications only"),
    (_fp32_scale_into_half, "a half-precision scale must have its tensor's type"),
], ids=["int8-zero-point", "nonzero-zero-point", "per-channel-activation", "fp8-into-add", "scale-type"])
def test_the_check_catches_fp8_mistakes(test_graphs, edit, expected):
    """The FP8 rules (NvInfer.h's Q/DQ layers, TensorRT for RTX's FP8 placement), each shown to catch its mistake
    in the shipped FP8 form with fp16 float parts."""
    model = test_graphs["model.fp8.onnx"]
    assert not check_graph(model, TABLES[-1])
    problems = check_graph(_edited(model, edit), TABLES[-1])
    assert any(expected in p for p in problems), problems


def test_the_check_catches_per_channel_left_operand_weights(test_graphs, tmp_path):
    """The INT8 form before this check existed scaled the ``W @ x`` weights per channel on axis 0: outside
    TensorRT's documented rules, and caught."""
    fp32 = tmp_path / "model.onnx"
    onnx.save(test_graphs["model.onnx"], str(fp32))
    options = Int8Options(sample_images()[0].parent, samples=2, method="minmax")
    preprocess = PreprocessConfig()
    ranges, _ = calibrate(fp32, read_calibration_images(options, preprocess, quiet=True), preprocess, options,
                          say=lambda _: None, quiet=True)
    old_form = dataclasses.replace(TARGETS["tensorrt"], per_channel_left_weights=True)
    problems = check_graph(quantize(fp32, ranges, options, old_form, fp16=False), TABLES[0])
    assert problems and all("per-channel weight feeds input 0 of MatMul node" in p for p in problems), problems


def test_an_opset_beyond_the_release_is_caught(test_graphs):
    model = _edited(test_graphs["model.onnx"], lambda model: None)
    model.opset_import[0].version = 21
    assert check_graph(model, TABLES[0]) == ["opset 21 is outside TensorRT 10.0's opsets 9-20"]
    assert not check_graph(model, TABLES[-1])


def _trtexec_releases() -> dict[str, set[str]]:
    return {r["release"]: set(r["flags"]) for r in json.loads(TRTEXEC_JSON.read_text())["releases"]}


def test_the_manifest_trtexec_lines_use_options_of_every_release(tmp_path):
    result = export_model("test", image_size=64, precisions=("fp32", "fp16", "fp8"), out_dir=tmp_path, quiet=True,
                          build=BuildOptions(timing_cache=tmp_path / "timing.cache"),
                          fp8_options=Fp8Options(sample_images()[0].parent, samples=2))
    lines = [c for c in result.manifest.engine_status("tensorrt").commands if c.startswith("trtexec")]
    assert len(lines) == 3 and "--onnx=model.fp8.onnx --saveEngine=engine.fp8.plan --stronglyTyped" in lines[2]
    for line in lines:
        assert not trtexec_problems(line, _trtexec_releases()), line


def test_the_trtexec_check_catches_options_11_removed():
    line = trtexec_command(Path("model.onnx"), Path("engine.plan"), 224, BuildOptions())
    releases = _trtexec_releases()
    assert not trtexec_problems(line, releases)
    assert trtexec_problems(line + " --fp16 --int8", releases) == [
        "--fp16 is not an option of trtexec 11.0, 11.1", "--int8 is not an option of trtexec 11.0, 11.1"]


# The modules that call TensorRT's API (tensorrt/capabilities.py and times.py call none of it).
SHARED_MODULES = ("tensorrt/engine.py", "tensorrt/builder.py", "tensorrt/messages.py", "tensorrt/plugins.py",
                  "tensorrt/flavours.py")
RTX_MODULE = "tensorrt/rtx.py"
PACKAGE = Path(__file__).parent.parent / "smlp_deploy"


def test_the_tensorrt_modules_use_names_every_release_binds():
    """mypy checks the TensorRT modules against 10.13's stubs; this holds every TensorRT name they use to the
    Python bindings of 10.0, 10.16, 11.0 and 11.1 (STRONGLY_TYPED yes, EXPLICIT_BATCH or BuilderFlag.FP16 no), and,
    where TensorRT for RTX is installed, to its module too."""
    releases = {r["release"]: set(r["names"]) for r in json.loads(BINDINGS_JSON.read_text())["releases"]}
    if TENSORRT_RTX.missing() is None:  # the names of TensorRT's that it defines (dir() adds Python's own)
        releases[f"for RTX {TENSORRT_RTX.version()}"] = module_names(import_tensorrt(TENSORRT_RTX)) & set().union(
            *releases.values())
    for module in SHARED_MODULES:
        assert not binding_problems((PACKAGE / module).read_text(), releases), module
    old_api = ("config.set_flag(trt.BuilderFlag.FP16)\n"
               "flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)")
    assert binding_problems(old_api, releases)[:2] == ["EXPLICIT_BATCH is not defined by TensorRT 11.0, 11.1" + (
        f", for RTX {TENSORRT_RTX.version()}" if TENSORRT_RTX.missing() is None else ""),
                                                       "FP16 is not defined by TensorRT 11.0, 11.1" + (
        f", for RTX {TENSORRT_RTX.version()}" if TENSORRT_RTX.missing() is None else "")]


@pytest.mark.skipif(TENSORRT_RTX.missing() is not None, reason=f"needs {TENSORRT_RTX.missing()}")
def test_the_rtx_only_calls_use_names_the_installed_tensorrt_rtx_defines():
    """TensorRT's stubs cannot type TensorRT for RTX's own API (runtime cache, engine validity, compute
    capabilities): every attribute the module reads is defined by tensorrt_rtx, or by the standard library's and
    the project's objects it also uses; a misspelt RTX call is caught (the runtime half cannot run here)."""
    import logging
    import shlex
    import threading
    import warnings

    from smlp_deploy.errors import Words
    from smlp_deploy.tensorrt.flavours import Flavour

    known = set().union(*(dir(o) for o in (Path, str, bytes, dict, OSError, logging, logging.Logger, shlex,
                                           threading, threading.Lock(), warnings, Flavour)))
    known |= {f.name for record in (Flavour, Words) for f in dataclasses.fields(record)}  # the project's records
    defined = module_names(import_tensorrt(TENSORRT_RTX))
    assert not unknown_names((PACKAGE / RTX_MODULE).read_text(), defined, known)
    misspelt = "config.cuda_graph_stratgy = api.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE"
    assert unknown_names(misspelt, defined, known) == ["cuda_graph_stratgy"]
