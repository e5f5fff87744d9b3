"""``doctor()``: what this machine can do with smlp-deploy, and for what it cannot, the install or the reason.

A GPU owner's first run should either work or say precisely what to do. The report lists the machine (Python,
torch and its CUDA, the GPUs, TensorRT and whether it can create a builder, ONNX Runtime and its providers,
onnxsim), the CPU's instruction sets and what each CPU precision runs on, the optional extras, and each capability
of the commands: ``ready``, or what is missing.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from . import __version__
from .artifacts import runs_precision
from .environment import (
    DISTRIBUTION,
    Gpu,
    cpu_features,
    cpu_model,
    extra_requirements,
    gpus,
    import_problem,
    installed_version,
    nvidia_driver,
    onnxruntime_providers,
    torch_cuda,
    unmet,
)
from .errors import SmlpDeployError
from .tensorrt_flavours import FLAVOURS, Flavour

EXTRAS = ("trt", "rtx", "gpu", "bench", "serve", "ray", "openvino")
# The libraries an extra brings, checked by importing them: that finds a broken install too, and a TensorRT from
# another distribution (tensorrt-cu12 instead of the tensorrt metapackage). The gpu extra's onnxruntime-gpu shares
# the onnxruntime module with the CPU package, so it is checked by its metadata and ONNX Runtime's providers.
EXTRA_LIBRARIES = {"trt": ("tensorrt",), "rtx": ("tensorrt_rtx",), "bench": ("matplotlib",),
                   "serve": ("tritonclient.http", "tritonclient.grpc"), "ray": ("ray", "ray.data"),
                   "openvino": ("openvino",)}
CORE = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxscript")
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class Extra:
    name: str
    declared: bool  # whether this version of smlp-deploy has the extra
    missing: list[str]  # its libraries that cannot be imported, or its requirements that are not installed

    @property
    def install(self) -> str:
        return f"pip install '{DISTRIBUTION}[{self.name}]'"


@dataclass(frozen=True)
class Capability:
    key: str  # for ``smlp-doctor --require``
    name: str
    commands: str  # the commands or API it stands for
    ready: bool
    needs: str  # empty when ready: otherwise what is missing and how to get it


@dataclass(frozen=True)
class TensorRTReport:
    """One TensorRT flavour here: its version, and why it cannot build or run engines (None where it can)."""

    flavour: str
    version: str | None
    builder: str | None  # why no builder can be created here
    runner: str | None  # why its engines cannot run here


CAPABILITIES = ("export-onnx", "gpu", "build-engines", *(f"run-engines-{f}" for f in FLAVOURS), "run-fp8",
                "calibrate-gpu", "bench-gpu", "serve", "ray", "openvino", "cpu-bf16")


@dataclass(frozen=True)
class CpuPrecision:
    """One precision class on this CPU: the paths that run it and the instructions their kernels use."""

    precision: str  # fp32 | bf16 | int8
    paths: str  # what runs it: backends and files
    instructions: str | None  # the instruction set its kernels use here; None: the CPU has none for it
    needs: str  # empty when it runs here; otherwise what is missing


@dataclass(frozen=True)
class CpuReport:
    model: str
    instructions: list[str]  # of environment.CPU_FEATURES, those this CPU has
    openvino: str | None  # OpenVINO's version, where installed
    openvino_capabilities: list[str]  # what OpenVINO's CPU plugin says this CPU computes natively (BF16, INT8, ...)
    precisions: list[CpuPrecision]

    def precision(self, name: str) -> CpuPrecision:
        return next(p for p in self.precisions if p.precision == name)


@dataclass(frozen=True)
class DoctorReport:
    smlp_deploy: str
    python: str
    platform: str
    torch: str | None
    torch_cuda: str | None  # the CUDA version torch was built with
    cuda_unavailable: str | None  # why torch cannot use a GPU; None when it can
    gpus: list[Gpu]
    driver: str | None
    tensorrt: list[TensorRTReport]  # one per flavour
    onnxruntime: str | None
    onnxruntime_gpu: str | None
    onnxruntime_providers: list[str]
    onnxsim: str | None
    extras: list[Extra]
    capabilities: list[Capability]
    cpu: CpuReport

    def capability(self, key: str) -> Capability:
        return next(c for c in self.capabilities if c.key == key)

    @property
    def cpu_only(self) -> bool:
        return self.cuda_unavailable is not None


def doctor() -> DoctorReport:
    """Inspect this machine (imports torch, and TensorRT and ONNX Runtime where installed)."""
    cuda = torch_cuda()
    extras = [_extra(name) for name in EXTRAS]
    report = DoctorReport(
        smlp_deploy=__version__, python=platform.python_version(), platform=platform.platform(),
        torch=cuda.torch, torch_cuda=cuda.cuda, cuda_unavailable=cuda.unavailable, gpus=gpus(),
        driver=nvidia_driver(), tensorrt=[_tensorrt_report(f) for f in FLAVOURS.values()],
        onnxruntime=installed_version("onnxruntime"), onnxruntime_gpu=installed_version("onnxruntime-gpu"),
        onnxruntime_providers=onnxruntime_providers(), onnxsim=installed_version("onnxsim"), extras=extras,
        capabilities=[], cpu=_cpu_report(extras),
    )
    report.capabilities.extend(_capabilities(report))
    return report


def _cpu_report(extras: list[Extra]) -> CpuReport:
    """The CPU's instruction sets (its flags), OpenVINO's view of it, and what each precision runs on here."""
    isa = cpu_features()
    openvino = next(e for e in extras if e.name == "openvino")
    capabilities: list[str] = []
    if not openvino.missing:
        from .runtime.backends.openvino_backend import cpu_capabilities

        capabilities = cpu_capabilities()
    openvino_needs = _extra_needs(openvino)

    def first(*names: str) -> str | None:
        return next((n for n in names if n in isa), None)

    onnxruntime = "" if installed_version("onnxruntime") or installed_version("onnxruntime-gpu") else \
        f"onnxruntime missing: pip install '{DISTRIBUTION}'"
    bf16 = first("AMX-BF16", "AVX-512 BF16")
    bf16_needs = openvino_needs or ("" if bf16 and (not capabilities or "BF16" in capabilities) else
                                    "this CPU has no bf16 instructions (AVX-512 BF16 or AMX-BF16): int8 on openvino "
                                    "is its fastest path, or fp32")
    return CpuReport(cpu_model(), isa, installed_version("openvino"), capabilities, [
        CpuPrecision("fp32", "onnxruntime (the default for .onnx), or openvino in fp32",
                     first("AVX-512", "AVX2"), onnxruntime),
        CpuPrecision("bf16", "openvino in bf16, on model.onnx (ONNX Runtime has no bf16 kernels on x86)", bf16,
                     bf16_needs),
        # The fastest path without bf16: OpenVINO runs the CPU form at NNCF's speed (docs/cpu.md, "INT8 on OpenVINO").
        CpuPrecision("int8", "model.int8.cpu.onnx on openvino (the fastest without bf16), or onnxruntime",
                     first("AMX-INT8", "AVX-512 VNNI", "AVX-VNNI") or first("AVX-512", "AVX2"), onnxruntime),
    ])


def _tensorrt_report(flavour: Flavour) -> TensorRTReport:
    return TensorRTReport(flavour.name, flavour.version(), flavour.builder_problem(), flavour.run_unavailable())


def _extra(name: str) -> Extra:
    """An extra is there when its libraries import, whether or not the installed metadata declares it (an editable
    install made before the extra was added does not)."""
    requirements = extra_requirements(name)
    if name in EXTRA_LIBRARIES:
        return Extra(name, requirements is not None, [p for p in map(import_problem, EXTRA_LIBRARIES[name]) if p])
    return Extra(name, requirements is not None, unmet(requirements or []))


def _capabilities(report: DoctorReport) -> list[Capability]:
    extras = {e.name: e for e in report.extras}
    gpu = _gpu_needs(report)
    missing_core = [name for name in CORE if installed_version(name) is None]
    core = f"{', '.join(missing_core)} missing: pip install '{DISTRIBUTION}'" if missing_core else ""
    builders = {FLAVOURS[t.flavour]: t.builder or "" for t in report.tensorrt}
    # Without a GPU, the GPU is said once (capability "gpu") and each flavour adds only its library.
    runners = {f: _join(gpu, f.missing() or "") if gpu else t.runner or "" for t in report.tensorrt
               for f in [FLAVOURS[t.flavour]]}
    build = "" if not all(builders.values()) else _join(*(f"{f.title}: {why}" for f, why in builders.items()))
    run = "" if not all(runners.values()) else _join(*(f.missing() or "" for f in runners)) if gpu else \
        _join(*(f"{f.title}: {why}" for f, why in runners.items()))
    ort_gpu = _onnxruntime_gpu_needs(report, extras["gpu"])
    compile_needs = "" if installed_version("triton") else "torch.compile on GPUs needs triton: pip install triton"
    return [
        Capability("export-onnx", "export ONNX, FP16, INT8 and FP8 ONNX", "smlp-export, "
                   "smlp_deploy.export.export_model", not core, core),
        Capability("gpu", "CUDA GPU for PyTorch", "eager and compiled PyTorch on a GPU", not gpu, gpu),
        Capability("build-engines", "build TensorRT engines",
                   "smlp-export: " + ", ".join(f"{f.title} engines" for f, why in builders.items() if not why) if
                   not build else "smlp-export (engines), smlp-export --from-onnx", not build, build),
        *(Capability(f"run-engines-{f.name}", f"run {f.title} engines",
                     f"Classifier('engine.*{f.engine_suffix}'), smlp-predict, smlp-eval", not why, why)
          for f, why in runners.items()),
        Capability("run-fp8", "run FP8 engines (8.9+)",
                   "Classifier('engine.fp8.plan' or 'engine.fp8.rtx.plan'), smlp-bench --precision fp8",
                   not (gpu or _fp8_needs(report)), gpu or _fp8_needs(report)),
        Capability("calibrate-gpu", "INT8 and FP8 calibration on the GPU", "smlp-export --int8/--fp8, its "
                   "calibration pass on ONNX Runtime's CUDA provider", not (gpu or ort_gpu), _join(gpu, ort_gpu)),
        Capability("bench-gpu", "GPU benchmark matrix", "smlp-bench: TensorRT engines fp32/fp16/int8 (and fp8 on "
                   "GPUs with FP8), ONNX Runtime CUDA, eager fp16, torch.compile; --plot",
                   not (gpu or run or ort_gpu or compile_needs or _extra_needs(extras["bench"])),
                   _join(gpu, run, ort_gpu, compile_needs, _extra_needs(extras["bench"]))),
        _with_extra("serve", "serving (Triton)", "smlp-triton, smlp-serve", extras["serve"], _tritonserver_needs()),
        _with_extra("ray", "batch inference on Ray", "smlp-predict --ray", extras["ray"]),
        _with_extra("openvino", "ONNX files on OpenVINO (CPU)", "Classifier(path, backend='openvino'), --backend "
                    "openvino, smlp-export --openvino", extras["openvino"]),
        Capability("cpu-bf16", "bf16 on the CPU", "Classifier(path, backend='openvino', precision='bf16')",
                   not report.cpu.precision("bf16").needs, report.cpu.precision("bf16").needs),
    ]


def _with_extra(key: str, name: str, commands: str, extra: Extra, *more_needs: str) -> Capability:
    """Commands that need an extra: ready where its libraries import (and whatever else they need is there)."""
    needs = _join(_extra_needs(extra), *more_needs)
    return Capability(key, name, commands, not needs, needs)


def _tritonserver_needs() -> str:
    """smlp-serve's local server (nvidia-pytriton's wheel, installed apart: it pins numpy<2), located as smlp-serve
    locates it, never imported."""
    from .serving.server import find_tritonserver

    try:
        find_tritonserver()
    except SmlpDeployError as error:
        return f"smlp-serve's local server: {error}"
    return ""


def _fp8_needs(report: DoctorReport) -> str:
    """Why no GPU here runs FP8 engines, or "" (said only where there is a usable GPU)."""
    usable = [g for g in report.gpus if g.usable_by_torch]
    if any(g.compute_capability != "?" and runs_precision(g.compute_capability, "fp8") for g in usable):
        return ""
    found = "; ".join(f"{g.name}: compute capability {g.compute_capability}" for g in usable) or "none usable"
    return (f"no GPU here has FP8 ({found}): FP8 engines run on compute capability 8.9 and later (L4, L40S, RTX "
            "40/50, H100, H200, B200); smlp-export --fp8 still builds them here (TensorRT for RTX, for 8.9, 12.0, "
            "12.1)")


def _gpu_needs(report: DoctorReport) -> str:
    if report.cuda_unavailable is None:
        return ""
    if not report.gpus:
        return f"no NVIDIA GPU here (nvidia-smi finds none; {report.cuda_unavailable})"
    if report.torch_cuda is None:
        return (f"{report.cuda_unavailable}, but this machine has {report.gpus[0].name}: install a CUDA build of "
                "torch into this environment (pip install torch --index-url https://download.pytorch.org/whl/cuXYZ "
                f"for a CUDA version driver {report.driver or '?'} supports; see pytorch.org/get-started)")
    return report.cuda_unavailable


def _extra_needs(extra: Extra) -> str:
    if not extra.missing:
        return ""
    if not extra.declared:
        return f"not part of {DISTRIBUTION} {__version__} (it has no [{extra.name}] extra)"
    verb = "cannot import" if extra.name in EXTRA_LIBRARIES else "missing"
    return f"{verb} {', '.join(extra.missing)}: {extra.install}"


def _onnxruntime_gpu_needs(report: DoctorReport, extra: Extra) -> str:
    if CUDA_PROVIDER in report.onnxruntime_providers:
        return ""
    if report.onnxruntime and report.onnxruntime_gpu:
        return ("onnxruntime and onnxruntime-gpu are both installed and share the onnxruntime module, so the CPU "
                "build hides the CUDA provider (microsoft/onnxruntime#26996): pip uninstall -y onnxruntime && "
                f"pip install --force-reinstall --no-deps onnxruntime-gpu=={report.onnxruntime_gpu}")
    return _extra_needs(extra) or f"onnxruntime-gpu {report.onnxruntime_gpu} offers no {CUDA_PROVIDER}"


def _join(*needs: str) -> str:
    return "; ".join(dict.fromkeys(n for n in needs if n))


def format_report(report: DoctorReport) -> str:
    """The report as a person reads it."""
    gpus = [f"GPU {g.index}: {g.name}, compute capability {g.compute_capability}"
            + (" (FP8)" if g.compute_capability != "?" and runs_precision(g.compute_capability, "fp8") else "")
            + f", {g.memory_gib} GiB"
            + ("" if g.usable_by_torch else " (torch cannot use it)") for g in report.gpus]
    providers = ", ".join(report.onnxruntime_providers) or "none"
    machine = [
        ("smlp-deploy", report.smlp_deploy),
        ("python", f"{report.python} ({report.platform})"),
        ("torch", f"{report.torch or 'not installed'}" + (f", CUDA {report.torch_cuda}" if report.torch_cuda else
                                                           ", CPU build")),
        ("GPUs", "; ".join(gpus) or "none (nvidia-smi finds no NVIDIA GPU)"),
        ("driver", report.driver or "-"),
        *((FLAVOURS[t.flavour].title, (t.version or "not installed") + ("" if t.version is None else
                                                                           f", builder: {t.builder or 'ok'}"))
          for t in report.tensorrt),
        ("ONNX Runtime", (f"{report.onnxruntime_gpu or report.onnxruntime or 'not installed'}"
                          f"{' (onnxruntime-gpu)' if report.onnxruntime_gpu else ''}, providers: {providers}")),
        ("onnxsim", report.onnxsim or "not installed"),
    ]
    undeclared = f" (its libraries; {DISTRIBUTION} {__version__} declares no such extra)"
    extras = [(f"[{e.name}]", _extra_needs(e) or "installed" + ("" if e.declared else undeclared))
              for e in report.extras]
    gpu = _gpu_needs(report)
    blocked = [c for c in report.capabilities if gpu and c.needs.startswith(gpu)]
    capabilities = [(c.name, "ready" if c.ready else f"no: {c.needs}") for c in report.capabilities if c not in blocked]
    without_gpu = [(c.name, "no" + (f"; also {rest}" if (rest := c.needs[len(gpu):].lstrip("; ")) else ""))
                   for c in blocked]
    cpu = report.cpu
    openvino = [("OpenVINO's view", f"{cpu.openvino}: {', '.join(cpu.openvino_capabilities)}")] if cpu.openvino else []
    cpu_lines = [("model", cpu.model), ("instructions", ", ".join(cpu.instructions) or "none known"), *openvino,
                 *((p.precision, f"{p.paths}: {p.instructions}" + (f" (no: {p.needs})" if p.needs else "")
                    if p.instructions else f"no: {p.needs}") for p in cpu.precisions)]
    width = max(len(k) for k, _ in machine + extras + capabilities + without_gpu + cpu_lines)
    lines = ["machine"] + [f"  {k:<{width}}  {v}" for k, v in machine]
    lines += ["CPU"] + [f"  {k:<{width}}  {v}" for k, v in cpu_lines]
    lines += ["extras"] + [f"  {k:<{width}}  {v}" for k, v in extras]
    lines += ["capabilities"] + [f"  {k:<{width}}  {v}" for k, v in capabilities]
    if blocked:  # the reason is said once, then what it blocks
        lines += [f"{gpu[0].upper()}{gpu[1:]}, so:"] + [f"  {k:<{width}}  {v}" for k, v in without_gpu]
    if report.cpu_only:
        builds = [FLAVOURS[t.flavour].title for t in report.tensorrt if t.builder is None]
        here = f"; {' and '.join(builds)} engines are built here" if builds else ""
        lines += ["", ("This machine is CPU-only: ONNX export, FP16, INT8 and FP8 ONNX, ONNX Runtime and the CPU "
                       f"benchmark work here{here}; running TensorRT engines and the GPU benchmark need an NVIDIA GPU "
                       "(there: make gpu-check).")]
    return "\n".join(lines)
