"""What a benchmark ran on: CPU, GPU, threads and library versions, saved beside every figure."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ..export.manifest import library_versions


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
