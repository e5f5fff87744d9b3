"""What this CPU is and what it computes in: its model, the cores this process may use, its instruction sets, and
whether it has bf16 (OpenVINO's view where OpenVINO is installed).

Apart from ``smlp_deploy.environment`` because the CPU backends read it, and nothing they reach may import torch.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


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


# The x86 instruction sets the CPU paths use, by their /proc/cpuinfo flag: FP32 kernels (AVX2, AVX-512), bf16
# (AVX-512 BF16, AMX-BF16: OpenVINO), INT8 dot products (VNNI, AMX-INT8: ONNX Runtime's and OpenVINO's INT8).
CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX-BF16",
                "avx512_fp16": "AVX-512 FP16", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
                "amx_int8": "AMX-INT8"}


def cpu_features() -> list[str]:
    """The instruction sets of :data:`CPU_FEATURES` this CPU has (Linux: /proc/cpuinfo's flags; elsewhere none)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [name for flag, name in CPU_FEATURES.items() if flag in flags]


BF16_FEATURES = ("AMX-BF16", "AVX-512 BF16")  # of CPU_FEATURES, those that compute in bf16


def openvino_cpu_capabilities(core: Any = None) -> list[str]:
    """What OpenVINO's CPU plugin (of ``core``, an ``openvino.Core``; a new one by default) says this CPU computes
    natively: FP32, BF16, INT8, ... Needs OpenVINO."""
    if core is None:
        import openvino as ov

        core = ov.Core()
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_missing(openvino_capabilities: list[str] | None) -> str | None:
    """Why this CPU cannot compute in bf16, or None where it can: OpenVINO's view where it answered (its kernels
    are what run bf16 here), the CPU's flags otherwise. The one answer the backend, the export and the doctor give."""
    if openvino_capabilities is not None:
        if "BF16" in openvino_capabilities:
            return None
        return ("this CPU has no bf16 instructions (AVX-512 BF16 or AMX-BF16; OpenVINO finds "
                f"{', '.join(openvino_capabilities)})")
    if any(feature in cpu_features() for feature in BF16_FEATURES):
        return None
    return "this CPU has no bf16 instructions (AVX-512 BF16 or AMX-BF16)"
