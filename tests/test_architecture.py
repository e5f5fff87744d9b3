"""The package's joints: imports point down the layers and never loop, every module imports on its own, and
``import smlp_deploy`` stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .import_graph import ARCHITECTURE, MODULES, ROOT, graph, import_base, layer_of, read_layers

# Lowest first: a module may import from its own layer and the layers before it, never from a later one. The
# table in docs/architecture.md is the rule: changing a layer is changing that page. The package's own __init__ is
# the facade over all of them and stands outside the layers.
LAYERS = [units for units, _ in read_layers()]
GRAPH = graph()


def layer(name: str) -> int:
    return layer_of(name, LAYERS)


def test_the_layer_table_names_every_unit_once():
    """docs/architecture.md's table places each top-level module and package of smlp_deploy in one layer, and
    names nothing that does not exist."""
    units = {name.split(".")[1] for name in MODULES if name != ROOT}
    listed = [unit for members in LAYERS for unit in members]
    assert not units - set(listed), f"add {units - set(listed)} to the table in {ARCHITECTURE}"
    assert not set(listed) - units, f"{set(listed) - units} in {ARCHITECTURE} are not in the package"
    assert len(listed) == len(set(listed)), f"a unit is in two layers of {ARCHITECTURE}"


def test_imports_point_down_the_layers():
    upward = [f"{source} -> {target}" for source, targets in GRAPH.items() if source != ROOT
              for target in targets if layer(target) > layer(source)]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_module_imports_the_package_face():
    """The face (``smlp_deploy/__init__.py``) re-exports what users call; a module that takes a name from it climbs
    above every layer (``from .. import __version__`` did)."""
    climbing = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and name != ROOT and import_base(name, node) == ROOT:
                climbing += [f"{name}: {alias.name}" for alias in node.names if f"{ROOT}.{alias.name}" not in MODULES]
    assert not climbing, climbing


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
    assert done.stdout.strip() == "['smlp_deploy', 'smlp_deploy._lazy', 'smlp_deploy.version']"


TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


def imports_tensorrt(name: str) -> list[str]:
    """Where the module's own code imports TensorRT of either flavour: import statements at any depth (type-checking
    ones too), and ``importlib.import_module`` or ``__import__`` called with the module's name."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            targets = [node.module or ""]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "__import__"):
            targets = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        else:
            continue
        found += [f"line {node.lineno}: {target}" for target in targets if target.split(".")[0] in TENSORRT_MODULES]
    return found


def test_only_the_tensorrt_package_imports_tensorrt():
    inside = f"{ROOT}.tensorrt"
    outside = {name: where for name in MODULES if name != inside and not name.startswith(inside + ".")
               if (where := imports_tensorrt(name))}
    assert not outside, outside
    assert imports_tensorrt(f"{ROOT}.tensorrt.flavours")  # the seam: the check sees its import of either module


def test_no_module_is_over_350_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 350}
    assert not long, f"split these modules: {long}"


def test_redrawing_a_saved_benchmark_loads_no_torch(tmp_path):
    """``smlp-bench --from-json`` only reads and writes files: no torch, no model, no runtime."""
    report = Path(__file__).parent.parent / "docs" / "benchmarks" / "cpu-2core-tiny.json"
    script = ("import sys\nfrom smlp_deploy.cli.bench import main\n"
              f"assert main(['--from-json', {str(report)!r}, '--csv', {str(tmp_path / 'r.csv')!r}]) == 0\n"
              "print(sorted(m for m in ('torch', 'onnxruntime', 'smlp_deploy.models.smlpnet') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "r.csv").stat().st_size > 0


def test_every_command_but_the_export_starts_without_torch():
    """A command's --help and argument errors come before any model: only smlp-export's module needs torch to load
    (smlp-eval's did, through the export's evaluation step, until it imported TorchBackend where it runs)."""
    commands = ("eval", "compare", "debug", "bench", "doctor", "triton", "serve", "predict")
    script = ("import importlib, sys\nsys.modules['torch'] = None\n"
              f"for name in {commands!r}:\n    importlib.import_module('smlp_deploy.cli.' + name)\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_every_benchmark_script_imports_names_the_package_has():
    """docs/benchmarks/ runs by hand, outside the suite: a module split (issue 29 moved cpu_features) must not leave
    a script that fails at its first line when someone reruns a figure."""
    import importlib

    scripts = sorted((Path(__file__).resolve().parent.parent / "docs" / "benchmarks").glob("*.py"))
    missing = []
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("smlp_deploy"):
                module = importlib.import_module(node.module)
                missing += [f"{script.name}:{node.lineno} {node.module}.{alias.name}" for alias in node.names
                            if not hasattr(module, alias.name)
                            and importlib.util.find_spec(f"{node.module}.{alias.name}") is None]
    assert len(scripts) > 10 and missing == []
