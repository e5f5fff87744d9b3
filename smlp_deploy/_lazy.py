"""Lazy package exports (PEP 562): a package's public names import their submodule on first use.

A package's ``__init__`` declares its exports once, as imports under ``if TYPE_CHECKING:``, which type checkers
and editors read; :func:`attach` reads the same block from the file's syntax tree. So ``import smlp_deploy``
loads nothing heavy, and ``smlp_deploy.Classifier`` loads the runtime but not the exporter, onnxsim or torch.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def attach(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package`` from its ``TYPE_CHECKING`` imports."""
    exports = _declared_exports(Path(init_file))

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = exports[name]
        if module.endswith("."):  # ``from . import submodule``
            value = importlib.import_module(module + attribute, package)
        else:
            value = getattr(importlib.import_module(module, package), attribute)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__, sorted(exports)


def _declared_exports(init_file: Path) -> dict[str, tuple[str, str]]:
    exports = {}
    for node in ast.parse(init_file.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    module = "." * statement.level + (statement.module or "")
                    for alias in statement.names:
                        exports[alias.asname or alias.name] = (module, alias.name)
    return exports
