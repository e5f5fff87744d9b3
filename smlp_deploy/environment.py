"""What this machine has: GPUs, library versions, the package's extras, whether torch can use a GPU, and where
the local tritonserver is (the CPU: ``smlp_deploy.cpu``).

Neutral ground: the manifest records the versions, the TensorRT flavours ask whether a GPU is usable, the
benchmark saves all of it beside its figures, ``smlp-doctor`` reports it. Heavy libraries are imported only
inside the functions.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .cpu import cpu_cores, cpu_model
from .errors import BackendUnavailableError

DISTRIBUTION = "smlp-deploy"

# Distributions whose versions every manifest and benchmark report records.
RECORDED_DISTRIBUTIONS = (
    "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "onnxscript", "tensorrt", "tensorrt-rtx", "openvino",
    "numpy",
)


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    versions = {dist: installed_version(dist) for dist in RECORDED_DISTRIBUTIONS}
    versions["python"] = platform.python_version()
    return versions


def extra_requirements(extra: str) -> list[str] | None:
    """The requirements smlp-deploy's installed metadata lists for ``extra`` (``"trt"``), or None if this version
    declares no such extra."""
    from packaging.requirements import Requirement

    if extra not in (metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or []):
        return None
    found = []
    for line in metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
            requirement.marker = None
            found.append(str(requirement))
    return found


def unmet(requirements: list[str]) -> list[str]:
    """Those of ``requirements`` (``"tensorrt>=10.0"``) that no installed distribution satisfies."""
    from packaging.requirements import Requirement

    missing = []
    for line in requirements:
        requirement = Requirement(line)
        version = installed_version(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(line if version is None else f"{line} (found {version})")
    return missing


def import_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported here, or None if it can: an import also finds a broken install (a missing
    shared library, a numpy it was not built for), which the package metadata cannot."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken install raises whatever its import does, not only ImportError
        return f"{module} ({exc})"
    return None


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # "9.0"; "?" where only nvidia-smi answered and it is too old to say
    memory_gib: float
    usable_by_torch: bool


@dataclass(frozen=True)
class TorchCuda:
    """What torch says about CUDA: its build, its devices, and why it cannot use one if it cannot."""

    torch: str | None  # torch's version; None if torch is not installed
    cuda: str | None  # the CUDA version torch was built with; None for a CPU build
    device_count: int
    unavailable: str | None  # None when torch can run on a GPU


def torch_cuda() -> TorchCuda:
    try:
        import torch
    except ImportError:
        return TorchCuda(None, None, 0, "torch is not installed")
    cuda = torch.version.cuda
    if cuda is None:
        return TorchCuda(torch.__version__, None, 0, f"torch {torch.__version__} is a CPU build (no CUDA)")
    if not torch.cuda.is_available():
        return TorchCuda(torch.__version__, cuda, 0, f"torch {torch.__version__} (CUDA {cuda}) finds no usable CUDA "
                                                     "device (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it)")
    return TorchCuda(torch.__version__, cuda, torch.cuda.device_count(), None)


def _nvidia_smi(*fields: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi --query-gpu=FIELDS``; None where nvidia-smi is missing or fails."""
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                              check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.strip().splitlines() if line.strip()]


def nvidia_driver() -> str | None:
    rows = _nvidia_smi("driver_version")
    return rows[0][0] if rows else None


def gpus() -> list[Gpu]:
    """Every NVIDIA GPU: from torch where it can use them, else from nvidia-smi (a GPU a CPU build of torch
    cannot use is still listed, so the report can say what to install)."""
    if torch_cuda().unavailable is None:
        import torch

        found = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(Gpu(index, props.name, f"{props.major}.{props.minor}",
                             round(props.total_memory / 2**30, 1), True))
        return found
    rows = _nvidia_smi("index", "name", "compute_cap", "memory.total") or [
        [*row[:2], "?", row[2]] for row in _nvidia_smi("index", "name", "memory.total") or []]
    return [Gpu(int(index), name, capability, round(float(mib) / 1024, 1), False)
            for index, name, capability, mib in rows]


def gpu_slug(name: str) -> str:
    """A GPU's name as a file name or part of one: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def gpu_info() -> dict[str, Any] | None:
    """The first GPU torch can use, as recorded beside benchmark figures; None without one."""
    usable = [gpu for gpu in gpus() if gpu.usable_by_torch]
    if not usable:
        return None
    first = usable[0]
    return {"name": first.name, "memory_gib": first.memory_gib, "compute_capability": first.compute_capability,
            "cuda": torch_cuda().cuda, "driver": nvidia_driver()}


def onnxruntime_providers() -> list[str]:
    """ONNX Runtime's execution providers; empty if it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def capture() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cpu_cores": cpu_cores(), "os": platform.platform(), "gpu": gpu_info(),
            "versions": library_versions()}


# The local Triton server (smlp-serve): the tritonserver in nvidia-pytriton's wheel, which pins numpy<2, so it is
# installed without its dependencies into a folder of its own inside the environment (see smlp_deploy.serving).
TRITON_PACKAGE = "nvidia-pytriton==0.7.0"
TRITON_FOLDER = "tritonserver"  # under sys.prefix: where triton_install_command() puts the wheel


def triton_install_command() -> str:
    return f"pip install --no-deps --target {Path(sys.prefix) / TRITON_FOLDER} {TRITON_PACKAGE}"


@dataclass(frozen=True)
class TritonInstall:
    """The files of the wheel's server: the binary, its Python backend, the stub for this Python, the libraries."""

    binary: Path
    python_backend: Path
    stub: Path
    libraries: Path


def find_tritonserver() -> TritonInstall:
    """The server of nvidia-pytriton's wheel: in ``<sys.prefix>/tritonserver`` (see :func:`triton_install_command`),
    else an importable ``pytriton`` package, located without importing it."""
    package = Path(sys.prefix) / TRITON_FOLDER / "pytriton"
    if not package.is_dir():
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise BackendUnavailableError(f"no tritonserver: nvidia-pytriton is not installed "
                                          f"({triton_install_command()}; it needs Linux x86-64 with glibc >= 2.35)")
        package = Path(spec.submodule_search_locations[0])
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(root / "bin" / "tritonserver", root / "backends" / "python",
                            root / "python_backend_stubs" / version / "triton_python_backend_stub",
                            root.parent.parent / "nvidia_pytriton.libs")
    missing = [str(p) for p in (install.binary, install.python_backend, install.stub, install.libraries)
               if not p.exists()]
    if missing:
        raise BackendUnavailableError(f"the tritonserver of {TRITON_PACKAGE} is incomplete (no {', '.join(missing)}); "
                                      "its Python stubs cover Python 3.8 to 3.13: reinstall with "
                                      f"{triton_install_command()}")
    return install
