"""smlp-doctor and make gpu-check: what this machine can do, said precisely, and the GPU run that stops before
installing anything where there is no GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import smlp_deploy
from smlp_deploy import checkup
from smlp_deploy.bench import BenchConfig, run_benchmark
from smlp_deploy.bench.report import write_json
from smlp_deploy.checkup import DoctorReport
from smlp_deploy.cli import bench as bench_cli
from smlp_deploy.cli import export as export_cli
from smlp_deploy.cli.doctor import CAPABILITIES, format_report, main
from smlp_deploy.environment import extra_requirements, import_problem, unmet
from smlp_deploy.imagefolder import find_images
from smlp_deploy.manifest import BatchProfile
from smlp_deploy.records import from_json, to_json
from smlp_deploy.tensorrt.flavours import FLAVOURS, TENSORRT, TENSORRT_RTX, flavour_for_compute_capability

from .conftest import PYTHON_WORDS
from .gpu_check import Step, bench_command, export_command, format_summary, gpu_slug, pytest_command

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def report() -> DoctorReport:
    return smlp_deploy.doctor()


def test_every_capability_is_ready_or_says_what_to_do(report):
    assert [c.key for c in report.capabilities] == list(CAPABILITIES)
    assert report.capability("export-onnx").ready  # this suite exports ONNX: it must be ready wherever it runs
    for capability in report.capabilities:
        assert capability.ready == (capability.needs == ""), capability
    gpu = report.capability("gpu")
    assert gpu.ready == (report.cuda_unavailable is None)
    for key in ("run-engines-tensorrt", "run-engines-tensorrt-rtx", "run-fp8", "calibrate-gpu", "bench-gpu"):
        assert report.capability(key).ready <= gpu.ready, key  # none of them without a GPU
        if not gpu.ready:
            assert gpu.needs in report.capability(key).needs, key
    tensorrt = {t.flavour: t for t in report.tensorrt}
    for flavour in FLAVOURS.values():
        if tensorrt[flavour.name].version is None:
            assert f"{flavour.title} is not installed ({flavour.install}" in \
                report.capability(f"run-engines-{flavour.name}").needs
    # TensorRT for RTX builds without a GPU: where it is installed, engines can be built on this machine.
    assert report.capability("build-engines").ready == any(t.builder is None for t in report.tensorrt)
    if tensorrt["tensorrt-rtx"].version is not None:
        assert report.capability("build-engines").ready and tensorrt["tensorrt-rtx"].builder is None
    if report.onnxruntime_gpu is None:
        assert ("missing onnxruntime-gpu>=1.24.1: pip install 'smlp-deploy[gpu]'"
                in report.capability("calibrate-gpu").needs)


def test_the_report_gives_the_gpu_reason_once_then_what_it_blocks(report):
    text = format_report(report)
    for capability in report.capabilities:
        assert text.count(f"  {capability.name}  ") == 1, capability.name
    gpu = report.capability("gpu").needs
    if gpu:  # this machine has none: the reason once, not once per capability that needs a GPU
        assert text.lower().count(gpu.lower()) == 1, text
        blocked = text.split(", so:\n", 1)[1]
        for key in ("gpu", "run-engines-tensorrt", "run-engines-tensorrt-rtx", "calibrate-gpu", "bench-gpu"):
            assert f"  {report.capability(key).name}  " in blocked, key


@pytest.mark.parametrize("key", ["serve", "ray"])
def test_serving_and_ray_are_judged_by_their_libraries(report, key):
    """Ready exactly where their extra's libraries import (serving: and smlp-serve finds its tritonserver), else
    the install command is named."""
    from smlp_deploy.environment import find_tritonserver
    from smlp_deploy.errors import SmlpDeployError

    usable = all(import_problem(module) is None for module in checkup.EXTRA_LIBRARIES[key])
    if key == "serve":
        try:
            find_tritonserver()
        except SmlpDeployError:
            usable = False
    capability = report.capability(key)
    assert capability.ready == usable, capability
    if not usable:
        assert "pip install" in capability.needs, capability


def test_a_library_is_judged_by_importing_it():
    assert import_problem("json") is None
    assert import_problem("no_such_module_here") == "no_such_module_here (No module named 'no_such_module_here')"


def test_an_extra_is_there_when_its_libraries_import(monkeypatch):
    """Whether or not the installed metadata declares it: an editable install older than the extra does not."""
    monkeypatch.setitem(checkup.EXTRA_LIBRARIES, "warp", ("json",))
    monkeypatch.setitem(checkup.EXTRA_LIBRARIES, "trt", ("no_such_module_here",))
    undeclared = checkup._extra("warp")
    assert undeclared == checkup.Extra("warp", False, []) and undeclared.needs == ""
    missing = checkup._extra("trt")
    assert missing.needs == ("cannot import no_such_module_here (No module named "
                             "'no_such_module_here'): pip install 'smlp-deploy[trt]'")
    assert checkup.Extra("warp", False, ["warp (No module named 'warp')"]).needs == (
        f"not part of smlp-deploy {smlp_deploy.__version__} (it has no [warp] extra)")


def test_a_cpu_only_machine_says_so(report, capsys):
    if not report.cpu_only:
        pytest.skip("a GPU is usable here")
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "This machine is CPU-only" in out and "make gpu-check" in out
    assert f"torch {report.torch}, CPU build" in " ".join(out.split()) or report.torch_cuda is not None
    assert main(["--require", "export-onnx,gpu"]) == 1
    err = capsys.readouterr().err
    assert f"not ready: CUDA GPU for PyTorch (gpu): {report.capability('gpu').needs}" in err
    assert "export-onnx" not in err


def test_fp8_is_judged_by_each_gpus_compute_capability(report):
    """FP8 engines need compute capability 8.9 or later: the doctor reads it off each GPU it lists (here, GPU
    records as nvidia-smi and torch would give them on an A10 and an L4 host)."""
    from dataclasses import replace

    from smlp_deploy.checkup import _fp8_needs
    from smlp_deploy.environment import Gpu

    a10, l4 = Gpu(0, "NVIDIA A10", "8.6", 22.1, True), Gpu(0, "NVIDIA L4", "8.9", 22.0, True)
    assert _fp8_needs(replace(report, gpus=[a10])).startswith(
        "no GPU here has FP8 (NVIDIA A10: compute capability 8.6): FP8 engines run on compute capability 8.9")
    assert _fp8_needs(replace(report, gpus=[a10, replace(l4, index=1)])) == ""
    assert "compute capability 8.9 (FP8), 22.0 GiB" in format_report(replace(report, gpus=[l4]))
    assert "compute capability 8.6, 22.1 GiB" in format_report(replace(report, gpus=[a10]))


def test_the_report_is_typed_json(report, capsys):
    assert main(["--json"]) in (0, 1)
    data = json.loads(capsys.readouterr().out)
    assert from_json(DoctorReport, data) == from_json(DoctorReport, to_json(report))
    assert {c["key"]: c["ready"] for c in data["capabilities"]} == {c.key: c.ready for c in report.capabilities}


def test_a_capability_that_does_not_exist_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--require", "warp-drive"])
    assert exit_info.value.code == 2 and "choose among export-onnx, gpu" in capsys.readouterr().err


def test_extras_come_from_the_package_metadata():
    """The doctor reads each extra's requirements from the installed metadata, so the extras it reports are the
    ones pyproject.toml declares (serve and ray included, once they exist)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    def same(requirements: list[str]) -> list[str]:  # as the metadata writes them: specifiers in its own order
        return sorted(str(Requirement(r)) for r in requirements)

    for name, requirements in declared.items():
        assert same(extra_requirements(name) or []) == same(requirements), name
    assert extra_requirements("no-such-extra") is None
    assert unmet(["numpy>=1.0"]) == []
    assert unmet(["numpy>=9999"])[0].startswith("numpy>=9999 (found ")
    assert unmet(["no-such-distribution-here>=1"]) == ["no-such-distribution-here>=1"]


def test_make_gpu_check_stops_at_the_doctor_without_a_gpu(report):
    """Here the first step fails with the doctor's explanation and a non-zero exit, before any install."""
    if report.capability("gpu").ready:
        pytest.skip("a GPU is usable here: make gpu-check would run for real")
    prefix = Path(sys.prefix)
    done = subprocess.run(["make", "--no-print-directory", "-o", f"{prefix}/.installed", f"VENV={prefix}", "gpu-check"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "== [1/3] smlp-doctor: can torch use a CUDA GPU here?" in output
    assert f"not ready: CUDA GPU for PyTorch (gpu): {report.capability('gpu').needs}" in output
    assert "This machine is CPU-only" in output
    assert "== [2/3]" not in output and "-m pip install" not in output  # make echoes each command it runs


def test_the_gpu_check_summary_reads_real_reports(report, random_export, tmp_path):
    """The summary make gpu-check prints, built from a real export's manifest and a real benchmark report."""
    bench = run_benchmark(BenchConfig(artifacts=random_export, backends=("torch", "onnxruntime"), batch_sizes=(1,),
                                      iters=5, warmup=1, device="cpu", threads=1), log=lambda _: None)
    write_json(bench, tmp_path / "bench.json")
    steps = [Step("GPU tests", ["pytest"], tmp_path / "log", 0, 12.0, "3 passed"),
             Step("benchmark", ["smlp-bench"], tmp_path / "log", 1, 5.0, "error: boom")]
    summary = format_summary(report, steps, random_export, tmp_path / "bench.json")
    assert f"smlp-deploy {report.smlp_deploy}" in summary
    assert "| GPU tests | ok: 3 passed | 12 |" in summary and "| benchmark | FAILED (1): error: boom | 5 |" in summary
    assert "| model.onnx | 1.000000 | 100% |" in summary
    assert "| torch fp32 | 1 |" in summary and "| onnxruntime fp32 | 1 |" in summary
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_the_gpu_check_commands_are_what_the_clis_accept(tmp_path):
    """What make gpu-check runs on a GPU host, held to the commands' own parsers here (it cannot run past the
    doctor on this machine)."""
    for capability, flavour in (("8.9", TENSORRT_RTX), ("9.0", TENSORRT), ("10.0", TENSORRT), ("12.0", TENSORRT_RTX)):
        assert flavour_for_compute_capability(capability) is flavour
    outputs = {kind: tmp_path / f"gpu.{kind}" for kind in ("json", "csv", "png")}
    # FP8 joins the export and the matrix where the GPU has it: an L4 (8.9), an H100 (9.0), not an A10 (8.6).
    for capability, fp8 in (("8.6", False), ("8.9", True), ("9.0", True)):
        flavour = flavour_for_compute_capability(capability)
        export = export_cli.parser().parse_args(export_command(tmp_path / "tiny", flavour, capability)[1:])
        assert (export.variant, export.fp32, export.fp16, export.int8, export.int8_target, export.fp8) == (
            "tiny", True, True, True, "both", fp8)
        assert export.flavour == (flavour.name,)
        assert export.require_engine and export.batch == BatchProfile(1, 32, 128) and export.out == tmp_path / "tiny"
        assert len(find_images(export.calib_dir)) == export.calib_samples == 5  # the bundled photos
        bench = bench_cli.parser().parse_args(bench_command(tmp_path / "tiny", outputs, flavour, capability)[1:])
        assert (bench.device, bench.backends, bench.precisions, bench.batch_sizes) == (
            "cuda", ("torch", "torch.compile", "onnxruntime", flavour.name),
            ("fp32", "fp16", "int8", *(["fp8"] if fp8 else [])), (1, 8, 32, 128))
        assert (bench.json, bench.csv, bench.plot) == tuple(outputs.values())
    collected = subprocess.run([*pytest_command(), "--collect-only"], check=False, cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-2000:]
    assert "tests/test_tensorrt_runtime.py::" in collected.stdout  # the marker selects the GPU tests


def test_the_cpu_section_says_what_each_precision_runs_on(report, capsys):
    from smlp_deploy.cpu import CPU_FEATURES, cpu_features

    cpu = report.cpu
    assert cpu.instructions == cpu_features() and set(cpu.instructions) <= set(CPU_FEATURES.values())
    assert [p.precision for p in cpu.precisions] == ["fp32", "bf16", "int8"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert ("AVX-512 BF16" in cpu.instructions) == (" avx512_bf16" in flags)
    bf16 = cpu.precision("bf16")
    has_bf16 = bool({"AVX-512 BF16", "AMX-BF16"} & set(cpu.instructions))
    assert bf16.instructions == next((i for i in ("AMX-BF16", "AVX-512 BF16") if i in cpu.instructions), None)
    openvino = import_problem("openvino") is None
    assert (bf16.needs == "") == (has_bf16 and openvino) == report.capability("cpu-bf16").ready
    if openvino:
        assert cpu.openvino and ("BF16" in cpu.openvino_capabilities) == has_bf16
    else:
        assert "pip install 'smlp-deploy[openvino]'" in bf16.needs
    int8 = cpu.precision("int8")
    assert int8.paths.startswith("model.int8.cpu.onnx on openvino (the fastest without bf16)")
    assert int8.instructions == next(i for i in ("AMX-INT8", "AVX-512 VNNI", "AVX-VNNI", "AVX-512", "AVX2")
                                     if i in cpu.instructions)
    assert main([]) == 0
    printed = capsys.readouterr().out
    assert "\nCPU\n" in printed and "  bf16 " in printed and "openvino in bf16, on model.onnx" in printed
    assert not PYTHON_WORDS.findall(printed), printed  # a command's words, as in its errors
