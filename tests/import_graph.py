"""The package's import graph, read from its files with ``ast`` (imports at any depth, inside functions too), and its
layers, read from the table in docs/architecture.md. tests/test_architecture.py checks the one against the other;
the documentation site draws them (docs/hooks/generated.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPOSITORY = Path(__file__).parent.parent
PACKAGE = REPOSITORY / "smlp_deploy"
ROOT = "smlp_deploy"
ARCHITECTURE = REPOSITORY / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_base(name: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` in module ``name`` imports from."""
    base = node.module or ""
    if not node.level:
        return base
    package = name if is_package(name) else name.rpartition(".")[0]
    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(anchor + ([base] if base else []))


def imported_modules(name: str) -> set[str]:
    """Every module of the package that importing ``name``, or calling into it, can import: imports at any
    depth (inside functions too: a lazy import is still a dependency), plus the ``__init__`` of each package on
    the way that is not already being imported (one of ``name``'s own ancestors)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = import_base(name, node)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES:
                found |= {target} | {a for a in ancestors(target) if a in MODULES}
    return found - ancestors(name) - {name, ROOT}


def graph() -> dict[str, set[str]]:
    return {name: imported_modules(name) for name in MODULES}


def unit(name: str) -> str:
    """The top-level module or package a module belongs to: ``smlp_deploy.export.job`` -> ``export``."""
    return name.split(".")[1]


def read_layers(page: Path = ARCHITECTURE) -> list[tuple[set[str], str]]:
    """The layers of the table in ``page`` (its rows name their units in backticks, highest layer first), lowest
    first, each with what it holds."""
    table = page.read_text().split("<!-- layers -->", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[2:]]
    return [(set(re.findall(r"`([a-z_]+)`", units)), holds.strip()) for units, holds in reversed(rows)]


def layer_of(name: str, layers: list[set[str]]) -> int:
    return next(i for i, members in enumerate(layers) if unit(name) in members)
