"""mypy over the whole package with the project's settings (``[tool.mypy]`` in pyproject.toml: strict), the TensorRT
modules held to ``disallow_any_expr`` as well. TensorRT cannot run here, so they are checked against its API
(``tensorrt-stubs``, TensorRT 10.13): every TensorRT object they handle has a type, so every call is checked.

``make test`` installs the stubs into ``<venv>/tensorrt-stubs`` (``tests/tensorrt_stubs.py``); the same check of the
package runs by hand (the stricter override is this file's: pyproject.toml's own run is clean)::

    MYPYPATH=.venv/tensorrt-stubs .venv/bin/python -m mypy smlp_deploy
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
STRICTER = ("smlp_deploy.tensorrt.engine", "smlp_deploy.tensorrt.builder", "smlp_deploy.tensorrt.messages",
            "smlp_deploy.tensorrt.plugins", "smlp_deploy.runtime.backends.tensorrt_backend")
# Added to pyproject.toml's settings for the package run: every TensorRT object typed, so the checker sees every call.
OVERRIDE = f"""
[[tool.mypy.overrides]]
module = [{", ".join(f'"{m}"' for m in STRICTER)}]
disallow_any_expr = true
"""
# numpy's array types carry Any in their shape parameter by numpy's design; they are the Backend interface's
# batches and logits, not TensorRT objects. Every other Any in these modules fails the check.
NUMPY_ANY = re.compile(r'Expression type contains "Any" \(has type "(ndarray|type\[floating)\[')


@pytest.fixture(scope="module")
def stubs() -> Path:
    if not (STUBS_DIR / MARKER).is_file():
        pytest.skip(f"{STUBS} is not installed in {STUBS_DIR}: `make test` installs it "
                    f"(python -m tests.tensorrt_stubs {STUBS_DIR})")
    return STUBS_DIR


def mypy(stubs: Path, *files: str, config: Path = ROOT / "pyproject.toml", cache: str = ".mypy_cache") -> list[str]:
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(stubs / cache), *files]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "MYPYPATH": str(stubs)})
    assert done.returncode in (0, 1), done.stderr
    return [line for line in done.stdout.splitlines() if ": error: " in line or ": note: Revealed" in line]


@pytest.fixture(scope="module")
def package_errors(stubs: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """mypy's errors on ``smlp_deploy`` under pyproject.toml's settings plus OVERRIDE."""
    config = tmp_path_factory.mktemp("stricter") / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text() + OVERRIDE)
    return mypy(stubs, "smlp_deploy", config=config, cache=".mypy_cache-stricter")  # its own: other settings


def _in_stricter(error: str) -> bool:
    return Path(error.split(":", 1)[0]).with_suffix("").as_posix().replace("/", ".") in STRICTER


def test_the_package_type_checks(package_errors):
    errors = [e for e in package_errors if not _in_stricter(e)]
    assert not errors, "\n".join(errors)


def test_the_tensorrt_modules_type_check(package_errors):
    errors = [e for e in package_errors if _in_stricter(e) and not NUMPY_ANY.search(e)]
    assert not errors, "\n".join(errors)


def test_the_stricter_check_runs(package_errors):
    """The override reaches the TensorRT modules: numpy's Any, which only disallow_any_expr reports, is seen there."""
    assert any(_in_stricter(e) and NUMPY_ANY.search(e) for e in package_errors), "\n".join(package_errors)


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
