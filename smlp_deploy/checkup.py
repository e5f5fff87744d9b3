"""``doctor()``: what this machine can do with smlp-deploy, and for what it cannot, the install or the reason.

A GPU owner's first run should either work or say precisely what to do. The report lists the machine (Python,
torch and its CUDA, the GPUs, TensorRT and whether it can create a builder, ONNX Runtime and its providers,
onnxsim), the CPU's instruction sets and what each CPU precision runs on, the optional extras, and each capability
of the commands: ``ready``, or what is missing.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from .artifacts import runs_precision
from .cpu import BF16_FEATURES, bf16_missing, cpu_features, cpu_model, openvino_cpu_capabilities
from .environment import (
    DISTRIBUTION,
    Gpu,
    extra_requirements,
    find_tritonserver,
    gpus,
    import_problem,
    installed_version,
    nvidia_driver,
    onnxruntime_providers,
    torch_cuda,
    unmet,
)
from .errors import SmlpDeployError
from .tensorrt.flavours import FLAVOURS, Flavour
from .version import __version__

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

    @property
    def needs(self) -> str:
        """What is missing and how to get it; empty where its libraries import."""
        if not self.missing:
            return ""
        if not self.declared:
            return f"not part of {DISTRIBUTION} {__version__} (it has no [{self.name}] extra)"
        verb = "cannot import" if self.name in EXTRA_LIBRARIES else "missing"
        return f"{verb} {', '.join(self.missing)}: {self.install}"


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
    missing: str | None  # why its library cannot be imported here, with the install
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

    @property
    def gpu_needs(self) -> str:
        """Why torch cannot use a GPU here, with what to install where a GPU is there; empty where it can."""
        if self.cuda_unavailable is None:
            return ""
        if not self.gpus:
            return f"no NVIDIA GPU here (nvidia-smi finds none; {self.cuda_unavailable})"
        if self.torch_cuda is None:
            return (f"{self.cuda_unavailable}, but this machine has {self.gpus[0].name}: install a CUDA build of "
                    "torch into this environment (pip install torch --index-url https://download.pytorch.org/whl/"
                    f"cuXYZ for a CUDA version driver {self.driver or '?'} supports; see pytorch.org/get-started)")
        return self.cuda_unavailable


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
    capabilities = None if openvino.missing else openvino_cpu_capabilities()

    def first(*names: str) -> str | None:
        return next((n for n in names if n in isa), None)

    onnxruntime = "" if installed_version("onnxruntime") or installed_version("onnxruntime-gpu") else \
        f"onnxruntime missing: pip install '{DISTRIBUTION}'"
    missing = bf16_missing(capabilities)
    bf16_needs = openvino.needs or (f"{missing}: int8 on openvino is its fastest path, or fp32" if missing else "")
    return CpuReport(cpu_model(), isa, installed_version("openvino"), capabilities or [], [
        CpuPrecision("fp32", "onnxruntime (the default for .onnx), or openvino in fp32",
                     first("AVX-512", "AVX2"), onnxruntime),
        CpuPrecision("bf16", "openvino in bf16, on model.onnx (ONNX Runtime has no bf16 kernels on x86)",
                     first(*BF16_FEATURES), bf16_needs),
        # The fastest path without bf16: OpenVINO runs the CPU form at NNCF's speed (docs/cpu.md, "INT8 on OpenVINO").
        CpuPrecision("int8", "model.int8.cpu.onnx on openvino (the fastest without bf16), or onnxruntime",
                     first("AMX-INT8", "AVX-512 VNNI", "AVX-VNNI") or first("AVX-512", "AVX2"), onnxruntime),
    ])


def _tensorrt_report(flavour: Flavour) -> TensorRTReport:
    return TensorRTReport(flavour.name, flavour.version(), flavour.missing(), flavour.builder_problem(),
                          flavour.run_unavailable())


def _extra(name: str) -> Extra:
    """An extra is there when its libraries import, whether or not the installed metadata declares it (an editable
    install made before the extra was added does not)."""
    requirements = extra_requirements(name)
    if name in EXTRA_LIBRARIES:
        return Extra(name, requirements is not None, import_problems(name))
    return Extra(name, requirements is not None, unmet(requirements or []))


def import_problems(extra: str) -> list[str]:
    """Why each library of ``extra`` (a key of :data:`EXTRA_LIBRARIES`) fails to import here; empty when all do."""
    return [problem for problem in map(import_problem, EXTRA_LIBRARIES[extra]) if problem]


def _capabilities(report: DoctorReport) -> list[Capability]:
    extras = {e.name: e for e in report.extras}
    gpu = report.gpu_needs
    missing_core = [name for name in CORE if installed_version(name) is None]
    core = f"{', '.join(missing_core)} missing: pip install '{DISTRIBUTION}'" if missing_core else ""
    builders = {FLAVOURS[t.flavour]: t.builder or "" for t in report.tensorrt}
    # Without a GPU, the GPU is said once (capability "gpu") and each flavour adds only its library.
    runners = {FLAVOURS[t.flavour]: _join(gpu, t.missing or "") if gpu else t.runner or "" for t in report.tensorrt}
    build = "" if not all(builders.values()) else _join(*(f"{f.title}: {why}" for f, why in builders.items()))
    run = "" if not all(runners.values()) else _join(*(t.missing or "" for t in report.tensorrt)) if gpu else \
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
                   not (gpu or run or ort_gpu or compile_needs or extras["bench"].needs),
                   _join(gpu, run, ort_gpu, compile_needs, extras["bench"].needs)),
        _with_extra("serve", "serving (Triton)", "smlp-triton, smlp-serve", extras["serve"], _tritonserver_needs()),
        _with_extra("ray", "batch inference on Ray", "smlp-predict --ray", extras["ray"]),
        _with_extra("openvino", "ONNX files on OpenVINO (CPU)", "Classifier(path, backend='openvino'), --backend "
                    "openvino, smlp-export --openvino", extras["openvino"]),
        Capability("cpu-bf16", "bf16 on the CPU", "Classifier(path, backend='openvino', precision='bf16')",
                   not report.cpu.precision("bf16").needs, report.cpu.precision("bf16").needs),
    ]


def _with_extra(key: str, name: str, commands: str, extra: Extra, *more_needs: str) -> Capability:
    """Commands that need an extra: ready where its libraries import (and whatever else they need is there)."""
    needs = _join(extra.needs, *more_needs)
    return Capability(key, name, commands, not needs, needs)


def _tritonserver_needs() -> str:
    """smlp-serve's local server (nvidia-pytriton's wheel, installed apart: it pins numpy<2), located as smlp-serve
    locates it, never imported."""
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


def _onnxruntime_gpu_needs(report: DoctorReport, extra: Extra) -> str:
    if CUDA_PROVIDER in report.onnxruntime_providers:
        return ""
    if report.onnxruntime and report.onnxruntime_gpu:
        return ("onnxruntime and onnxruntime-gpu are both installed and share the onnxruntime module, so the CPU "
                "build hides the CUDA provider (microsoft/onnxruntime#26996): pip uninstall -y onnxruntime && "
                f"pip install --force-reinstall --no-deps onnxruntime-gpu=={report.onnxruntime_gpu}")
    return extra.needs or f"onnxruntime-gpu {report.onnxruntime_gpu} offers no {CUDA_PROVIDER}"


def _join(*needs: str) -> str:
    return "; ".join(dict.fromkeys(n for n in needs if n))
