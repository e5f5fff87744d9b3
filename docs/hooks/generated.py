"""MkDocs hook: the parts of the pages that the code itself says, generated at build time so they cannot go stale.

``<!-- cli-help: export -->`` becomes ``smlp-export --help`` (``<!-- cli-help: debug layers -->``: a subcommand's);
``<!-- artifacts-table -->`` the one table of artifact kinds (``smlp_deploy.artifacts``); ``<!-- backends-table -->``
the registry of runtime backends (``smlp_deploy.runtime.backends.registry``); ``<!-- layers-graph -->`` the imports
between the layers of docs/architecture.md's table, and ``<!-- modules -->`` every module of the package by layer
(tests/import_graph.py).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import re
from collections import Counter
from pathlib import Path
from types import ModuleType

MARKER = re.compile(r"<!-- (cli-help: (?P<command>[a-z]+(?: [a-z]+)?)|(?P<table>artifacts|backends)-table"
                    r"|(?P<graph>layers-graph)|(?P<modules>modules)) -->")
IMPORT_GRAPH = Path(__file__).resolve().parent.parent.parent / "tests" / "import_graph.py"
HELP_COLUMNS = "100"  # argparse wraps to $COLUMNS: a fixed width, whatever the terminal that builds the site


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARKER.sub(_render, markdown)


def _render(match: re.Match[str]) -> str:
    if match["command"]:
        return _cli_help(match["command"])
    if match["graph"]:
        return _layers_graph()
    if match["modules"]:
        return _modules()
    return _artifacts() if match["table"] == "artifacts" else _backends()


def _cli_help(command: str) -> str:
    os.environ["COLUMNS"] = HELP_COLUMNS
    name, _, sub = command.partition(" ")
    parser = importlib.import_module(f"smlp_deploy.cli.{name}").parser()
    if sub:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[sub]
    return f"```text\n{parser.format_help().rstrip()}\n```"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _artifacts() -> str:
    from smlp_deploy.artifacts import ARTIFACTS, FORMATS

    rows = [[f"`{k.file_name}`", FORMATS[k.format].description, k.precision, k.target or "any",
             f"`{k.source}`" if k.source else ("an engine per TensorRT flavour" if k.builds_engines else "-"),
             k.description] for k in ARTIFACTS.values()]
    return _table(["file", "format", "precision", "meant for", "built from / yields", "what"], rows)


def _backends() -> str:
    from smlp_deploy.runtime.backends.registry import BACKENDS

    rows = [[f"`{b.name}`", b.runs, ", ".join(b.devices), ", ".join(b.options) or "-"] for b in BACKENDS.values()]
    return _table(["backend", "opens", "devices", "options"], rows)


def _import_graph() -> ModuleType:
    """tests/import_graph.py, by its path (the repository is not on the path of a mkdocs build)."""
    spec = importlib.util.spec_from_file_location("import_graph", IMPORT_GRAPH)
    assert spec is not None and spec.loader is not None, IMPORT_GRAPH
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layer_names(layers: list[set[str]]) -> list[str]:
    return [", ".join(sorted(units)) if len(units) < 4 else "neutral" for units in layers]


def _layers_graph() -> str:
    """A mermaid drawing: a box per layer, an arrow from a layer to each lower one it imports, with the count."""
    found = _import_graph()
    layers = [units for units, _ in found.read_layers()]
    arrows = Counter((found.layer_of(source, layers), found.layer_of(target, layers))
                     for source, targets in found.graph().items()
                     if source != "smlp_deploy" for target in targets)
    names = _layer_names(layers)
    lines = ["```mermaid", "flowchart TB"] + [f'  L{i}["{name}"]' for i, name in reversed(list(enumerate(names)))]
    lines += [f"  L{a} -->|{n}| L{b}" for (a, b), n in sorted(arrows.items(), reverse=True) if a != b]
    return "\n".join(lines + ["```"])


def _modules() -> str:
    """Each layer's modules, highest layer first, each with the first paragraph of its docstring."""
    found = _import_graph()
    layers = [units for units, _ in found.read_layers()]
    names = _layer_names(layers)
    lines = []
    for index in reversed(range(len(layers))):
        members = sorted(m for m in found.MODULES if m != "smlp_deploy" and found.layer_of(m, layers) == index)
        lines += [f"**{names[index]}**", ""]
        for module in members:
            summary = (ast.get_docstring(ast.parse(found.MODULES[module].read_text())) or "").split("\n\n")[0]
            lines.append(f"- `{module.removeprefix('smlp_deploy.')}`: {' '.join(summary.split())}")
        lines.append("")
    return "\n".join(lines)
