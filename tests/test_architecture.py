"""The package's joints: imports point down the layers and never loop, every module imports on its own, and
``import smlp_deploy`` stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import smlp_deploy

PACKAGE = Path(smlp_deploy.__file__).parent
ROOT = "smlp_deploy"
# Lowest first: a module may import from its own layer and the layers before it, never from a later one.
# The package's own __init__ is the facade over all of them and stands outside the layers.
LAYERS = [
    {"_lazy", "errors", "fileio", "filekind", "records", "tensorrt_flavours", "artifacts", "preprocess_config",
     "environment", "manifest", "progress", "imagefolder", "samples"},
    {"models"},
    {"runtime"},
    {"calibration", "evaluation"},
    {"export"},
    {"bench"},
    {"serving", "batch"},
    {"checkup"},
    {"cli"},
]


def module_name(path: Path) -> str:
    parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def imported_modules(name: str) -> set[str]:
    """Every module of the package that importing ``name``, or calling into it, can import: imports at any
    depth (inside functions too: a lazy import is still a dependency), plus the ``__init__`` of each package on
    the way that is not already being imported (one of ``name``'s own ancestors)."""
    package = name if is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES:
                found |= {target} | {a for a in ancestors(target) if a in MODULES}
    return found - ancestors(name) - {name, ROOT}


GRAPH = {name: imported_modules(name) for name in MODULES}


def layer(name: str) -> int:
    top = name.split(".")[1]
    return next(i for i, members in enumerate(LAYERS) if top in members)


def test_every_module_has_a_layer():
    unplaced = {name.split(".")[1] for name in MODULES if name != ROOT} - set().union(*LAYERS)
    assert not unplaced, f"add {unplaced} to LAYERS"


def test_imports_point_down_the_layers():
    upward = [f"{source} -> {target}" for source, targets in GRAPH.items() if source != ROOT
              for target in targets if layer(target) > layer(source)]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target] if target in path else [name, target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(MODULES):
        if name not in state and (cycle := visit(name, [name])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_cycle(monkeypatch):
    """The graph is built from the files as they are: a cycle added by hand is found."""
    monkeypatch.setitem(GRAPH, "smlp_deploy.errors", GRAPH["smlp_deploy.errors"] | {"smlp_deploy.fileio"})
    monkeypatch.setitem(GRAPH, "smlp_deploy.fileio", GRAPH["smlp_deploy.fileio"] | {"smlp_deploy.errors"})
    with pytest.raises(pytest.fail.Exception, match=r"import cycle: smlp_deploy\.errors -> smlp_deploy\.fileio"):
        test_no_import_cycle_between_modules()


def test_every_module_imports_first_in_a_fresh_interpreter():
    def import_alone(name: str) -> tuple[str, str]:
        done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120,
                              check=False)
        return name, done.stderr.strip().splitlines()[-1] if done.returncode else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f"{name}: {error}" for name, error in pool.map(import_alone, sorted(MODULES)) if error]
    assert not failures, "\n".join(failures)


def test_running_an_onnx_model_loads_no_exporter(random_export):
    """``import smlp_deploy; Classifier("model.onnx")`` loads the runtime only: no torch (so none of torch.onnx),
    onnxsim, onnxscript, the quantizer or matplotlib; nor does choosing ONNX Runtime's providers from a list that
    offers CUDA (what onnxruntime-gpu offers on a GPU host), nor an OpenVINO Classifier."""
    from smlp_deploy.environment import import_problem

    heavy = ["torch", "onnxsim", "onnxscript", "onnxruntime.quantization", "matplotlib", "smlp_deploy.export"]
    backends = [None] + (["openvino"] if import_problem("openvino") is None else [])
    model = str(random_export / "model.onnx")
    script = (
        "import sys, smlp_deploy\n"
        "from smlp_deploy.samples import sample_images\n"
        "from smlp_deploy.runtime.backends.onnxruntime_backend import execution_providers\n"
        "offered = ['CUDAExecutionProvider', 'CPUExecutionProvider']\n"
        "assert all('CUDA' in str(execution_providers(d, offered)[0]) for d in (None, 'cuda', 'cuda:1'))\n"
        f"for backend in {backends!r}:\n"
        f"    smlp_deploy.Classifier({model!r}, backend=backend).predict(sample_images()[0])\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def imports_torch(name: str) -> bool:
    """Whether the module's own code imports torch, at any depth (inside functions too)."""
    return any((isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names))
               or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch" and not node.level)
               for node in ast.walk(ast.parse(MODULES[name].read_text())))


def reachable(name: str) -> set[str]:
    found, todo = set(), [name]
    while todo:
        for target in GRAPH[todo.pop()] - found:
            found.add(target)
            todo.append(target)
    return found | {name}


@pytest.mark.parametrize("backend", ["onnxruntime_backend", "openvino_backend"])
def test_no_backend_imports_torch_unless_it_runs_pytorch(backend):
    """Statically, whatever is reached: a lazy ``import torch`` on a path that a GPU host takes and CI does not (the
    CUDA provider's) would pass the run-time test above and still load torch there."""
    name = f"{ROOT}.runtime.backends.{backend}"
    assert not sorted(m for m in reachable(name) if imports_torch(m))
    assert imports_torch(f"{ROOT}.runtime.backends.torch_backend")  # the check sees an import of torch


def test_import_smlp_deploy_loads_nothing_else():
    script = "import sys, smlp_deploy; print(sorted(m for m in sys.modules if m.startswith(('smlp', 'numpy'))))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['smlp_deploy', 'smlp_deploy._lazy']"
