"""What this machine has: CPU, GPU, library versions, and whether TensorRT can run here.

Neutral ground: the manifest records the versions, the runtime and export ask whether TensorRT is usable,
the benchmark saves all of it beside its figures. Heavy libraries are imported only inside the functions.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions every manifest and benchmark report records.
RECORDED_DISTRIBUTIONS = (
    "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "onnxscript", "tensorrt", "numpy",
)


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in RECORDED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["python"] = platform.python_version()
    return versions


def tensorrt_unavailable_reason() -> str | None:
    """Why an engine cannot be built or run here, or None if TensorRT and a CUDA GPU are both present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install 'smlp-deploy[trt]' on a GPU host)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def cpu_cores() -> int:
    """Cores this process may run on (its affinity), the thread count every backend is pinned to."""
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        info["driver"] = None
    return info


def capture() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cpu_cores": cpu_cores(), "os": platform.platform(), "gpu": gpu_info(),
            "versions": library_versions()}
