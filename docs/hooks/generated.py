"""MkDocs hook: the parts of the pages that the code itself says, generated at build time so they cannot go stale.

``<!-- cli-help: export -->`` becomes ``smlp-export --help``; ``<!-- artifacts-table -->`` the one table of artifact
kinds (``smlp_deploy.artifacts``); ``<!-- backends-table -->`` the registry of runtime backends
(``smlp_deploy.runtime.backends.registry``).
"""

from __future__ import annotations

import importlib
import os
import re

MARKER = re.compile(r"<!-- (cli-help: (?P<command>[a-z]+)|(?P<table>artifacts|backends)-table) -->")
HELP_COLUMNS = "100"  # argparse wraps to $COLUMNS: a fixed width, whatever the terminal that builds the site


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARKER.sub(_render, markdown)


def _render(match: re.Match[str]) -> str:
    if match["command"]:
        return _cli_help(match["command"])
    return _artifacts() if match["table"] == "artifacts" else _backends()


def _cli_help(command: str) -> str:
    os.environ["COLUMNS"] = HELP_COLUMNS
    parser = importlib.import_module(f"smlp_deploy.cli.{command}").parser()
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
