"""What every command shares: turning the toolkit's errors into one clear line and exit status 2."""

from __future__ import annotations

import sys
import warnings
from typing import Callable

from ..errors import SmlpDeployError


def run_main(main: Callable[[], int | None]) -> Callable[[], int]:
    """Wrap a command's ``main`` so that toolkit errors print ``error: ...`` instead of a traceback."""

    def wrapped() -> int:
        warnings.formatwarning = _one_line
        try:
            return main() or 0
        except SmlpDeployError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: no partial file was left behind", file=sys.stderr)
            return 130

    return wrapped


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"
