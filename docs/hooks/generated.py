"""MkDocs hook: the parts of the pages that the code itself says, generated at build time so they cannot go stale.

``<!-- cli-help: export -->`` becomes ``smlp-export --help`` (``<!-- cli-help: debug layers -->``: a subcommand's);
``<!-- artifacts-table -->`` the one table of artifact kinds (``smlp_deploy.artifacts``); ``<!-- backends-table -->``
the registry of runtime backends (``smlp_deploy.runtime.backends.registry``); ``<!-- layers-graph -->`` the imports
between the layers of docs/architecture.md's table, and ``<!-- modules -->`` every module of the package by layer
(tests/import_graph.py).

The plain lists that make docs/cli.md and docs/api.md readable as files are checked instead, failing the build:
docs/cli.md's ``<!-- commands -->`` table names exactly the scripts of pyproject.toml's ``[project.scripts]``, each
with its ``cli-help`` section; docs/api.md's ``<!-- api-list -->`` table names exactly the page's ``:::`` entries,
in their order, each an object of the package.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import re
import tomllib
from collections import Counter
from pathlib import Path
from types import ModuleType

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"<!-- (cli-help: (?P<command>[a-z]+(?: [a-z]+)?)|(?P<table>artifacts|backends)-table"
                    r"|(?P<graph>layers-graph)|(?P<modules>modules)) -->")
ROOT = Path(__file__).resolve().parent.parent.parent
IMPORT_GRAPH = ROOT / "tests" / "import_graph.py"
LIST = re.compile(r"<!-- (?P<name>commands|api-list) -->\n(?P<table>.*?)\n<!-- /(?P=name) -->", re.S)
ROW = re.compile(r"^\| \[`(?P<shown>[^`]+)`\]\(#(?P<anchor>[^)]+)\) \| (?P<what>.+) \|$", re.M)
HELP_COLUMNS = "100"  # argparse wraps to $COLUMNS: a fixed width, whatever the terminal that builds the site


def on_page_markdown(markdown: str, **_: object) -> str:
    for found in LIST.finditer(markdown):
        rows = list(ROW.finditer(found["table"]))
        (_check_commands if found["name"] == "commands" else _check_api)(rows, markdown)
    return MARKER.sub(_render, markdown)


def _check_commands(rows: list[re.Match[str]], markdown: str) -> None:
    """The commands table names each script of pyproject.toml once, in a row of its own that links to its section,
    and each script's module has its ``cli-help`` section on the page."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    listed = [row["shown"] for row in rows]
    missing, unknown = sorted(set(scripts) - set(listed)), sorted(set(listed) - set(scripts))
    if missing or unknown or len(listed) != len(set(listed)):
        raise PluginError(f"docs/cli.md's list of commands does not match pyproject.toml's [project.scripts]: "
                          f"add a line for {missing or 'none'}, remove {unknown or 'none'}, once each")
    for row in rows:
        module = scripts[row["shown"]].split(":")[0].removeprefix("smlp_deploy.cli.")
        if row["anchor"] != row["shown"] or f"<!-- cli-help: {module} -->" not in markdown:
            raise PluginError(f"docs/cli.md: {row['shown']} needs a section '## {row['shown']}' holding "
                              f"<!-- cli-help: {module} --> (its row links to #{row['anchor']})")


def _check_api(rows: list[re.Match[str]], markdown: str) -> None:
    """The API table lists the page's ``:::`` entries, in their order, each an object of the package."""
    documented = re.findall(r"^::: (\S+)$", markdown, re.M)
    listed = [row["anchor"] for row in rows]
    if listed != documented:
        raise PluginError(f"docs/api.md's list differs from its ::: entries: listed but not documented "
                          f"{sorted(set(listed) - set(documented)) or 'none'}, documented but not listed "
                          f"{sorted(set(documented) - set(listed)) or 'none'} (or the order differs)")
    for row in rows:
        if not row["anchor"].endswith(row["shown"]) or _resolve(row["anchor"]) is None:
            raise PluginError(f"docs/api.md lists {row['shown']} as {row['anchor']}, which the package does not have")


def _resolve(name: str) -> object | None:
    """The object a dotted name stands for (a module, or an attribute of one), or None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
        return found
    return None


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
