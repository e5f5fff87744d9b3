"""Run docs/getting-started.md's first run as a newcomer would, after `make export`, and hold its output to the page.

Each code block of the page's "A first run" section that holds commands is run in order, in the repository's root,
with `.venv/bin` first on PATH (as `source .venv/bin/activate` would); the block after it, where there is one,
is the output the page shows, and the commands' output must match it line for line. In the page's output, a line
`...` stands for any lines, and `...` inside a line for any text; a table's padding and rules may be of any width;
warnings (stderr) are part of what is shown.

    make export && .venv/bin/python tests/check_getting_started.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "getting-started.md"
COMMANDS = ("smlp-", "python ", "pip ", "source ")


def blocks(text: str) -> list[str]:
    """The fenced code blocks of the first-run section, in order."""
    section = text.split("**A first run.**", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```[a-z]*\n(.*?)```", section, re.S)


def commands_of(block: str) -> list[str] | None:
    """The shell commands of a block (backslash continuations joined, comments dropped); None for an output block."""
    joined = block.replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]
    return lines if lines and all(line.startswith(COMMANDS) for line in lines) else None


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, ``...`` standing for any lines (a line of its own) or any text (inside a line)."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    pattern = ".*".join(_literal(part) for part in head.rstrip().split("...")) + r"\s*"
    return bool(actual) and re.fullmatch(pattern, actual[0].rstrip()) is not None and matches(rest, actual[1:])


def _literal(text: str) -> str:
    """``text`` as a pattern whose table padding (2 or more spaces) and rules (3 or more dashes) may be of any width:
    a column is as wide as its longest cell, and the photos' paths are as long as where the clone lies."""
    return "".join(r" {2,}" if re.fullmatch(r" {2,}", piece) else r"-{3,}" if re.fullmatch(r"-{3,}", piece)
                   else re.escape(piece) for piece in re.split(r"( {2,}|-{3,})", text))


def main() -> int:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    found = blocks(PAGE.read_text())
    failures = 0
    for i, block in enumerate(found):
        commands = commands_of(block)
        if commands is None:
            continue
        printed = []
        for command in commands:
            if command.startswith("source "):
                continue  # PATH above does what activating the venv does
            print(f"$ {command}", flush=True)
            done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"FAILED with status {done.returncode}:\n{done.stdout}{done.stderr}")
                return 1
            printed += (done.stderr + done.stdout).splitlines()
        shown = found[i + 1] if i + 1 < len(found) and commands_of(found[i + 1]) is None else None
        if shown is not None:
            expected = [line for line in shown.splitlines()]
            actual = [line for line in printed if line.strip() or expected]
            if not matches([e for e in expected if e.strip()], [a for a in actual if a.strip()]):
                failures += 1
                print("OUTPUT DIFFERS from the page. The page shows:\n" + shown + "\nThe commands printed:\n"
                      + "\n".join(printed))
    print("the first run matches the page" if not failures else f"{failures} output(s) differ from the page")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
