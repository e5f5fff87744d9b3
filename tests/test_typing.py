"""The TensorRT modules type-checked against TensorRT's API (``tensorrt-stubs``, TensorRT 10.13) with mypy, since
TensorRT itself cannot run here: every TensorRT object they handle has a type, so every call is checked.

``make test`` installs the stubs into ``<venv>/tensorrt-stubs`` (``tests/tensorrt_stubs.py``); the mypy settings
are ``[tool.mypy]`` in pyproject.toml, so the same check runs by hand::

    MYPYPATH=.venv/tensorrt-stubs .venv/bin/python -m mypy smlp_deploy/runtime/backends/tensorrt_backend.py \\
        smlp_deploy/export/tensorrt_build.py smlp_deploy/runtime/backends/tensorrt_rtx_api.py \\
        smlp_deploy/tensorrt_flavours.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .tensorrt_stubs import MARKER, STUBS

ROOT = Path(__file__).parent.parent
STUBS_DIR = Path(sys.prefix) / "tensorrt-stubs"
MODULES = ("smlp_deploy/runtime/backends/tensorrt_backend.py", "smlp_deploy/export/tensorrt_build.py",
           "smlp_deploy/runtime/backends/tensorrt_rtx_api.py", "smlp_deploy/tensorrt_flavours.py")
# numpy's array types carry Any in their shape parameter by numpy's design; they are the Backend interface's
# batches and logits, not TensorRT objects. Every other Any in these modules fails the check.
NUMPY_ANY = re.compile(r'Expression type contains "Any" \(has type "(ndarray|type\[floating)\[')


@pytest.fixture(scope="module")
def stubs() -> Path:
    if not (STUBS_DIR / MARKER).is_file():
        pytest.skip(f"{STUBS} is not installed in {STUBS_DIR}: `make test` installs it "
                    f"(python -m tests.tensorrt_stubs {STUBS_DIR})")
    return STUBS_DIR


def mypy(stubs: Path, *files: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(stubs / ".mypy_cache"), *files], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "MYPYPATH": str(stubs)}, check=False)
    assert done.returncode in (0, 1), done.stderr
    return [line for line in done.stdout.splitlines() if ": error: " in line or ": note: Revealed" in line]


def test_the_tensorrt_modules_type_check(stubs):
    errors = mypy(stubs, *MODULES)
    assert not [e for e in errors if not NUMPY_ANY.search(e)], "\n".join(errors)


def test_the_checker_sees_tensorrt_calls(stubs, tmp_path):
    """mypy reads the stubs, not ``Any``: wrong arguments, an unchecked None and the types are all seen."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import tensorrt as trt\n"
        "logger = trt.Logger(trt.Logger.WARNING)\n"
        "builder = trt.Builder(logger)\n"
        "network = builder.create_network('strongly typed')\n"
        "engine = trt.Runtime(logger).deserialize_cuda_engine(b'')\n"
        "print(engine.num_io_tensors)\n"
        "reveal_type(builder.create_builder_config())\n"
    )
    errors = "\n".join(mypy(stubs, str(probe)))
    assert 'Argument 1 to "create_network" of "Builder" has incompatible type "str"; expected "int"' in errors
    assert 'Item "None" of "ICudaEngine | None" has no attribute "num_io_tensors"' in errors
    assert 'Revealed type is "tensorrt_bindings.tensorrt.IBuilderConfig"' in errors
