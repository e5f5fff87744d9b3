"""What every command shares: the toolkit's errors as one clear line naming the flag at fault, exit status 2."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Mapping

from ..errors import SmlpDeployError


def run_main(main: Callable[[], int | None], flags: Mapping[str, str] | None = None) -> Callable[[], int]:
    """Wrap a command's ``main`` so that toolkit errors print ``error: ...`` instead of a traceback.

    ``flags`` maps the API parameters the library names in its errors (``calib_dir``) to this command's flags
    (``--calib-dir``), so the message points at what the user typed and its hints name flags and commands.
    """
    flags = flags or {}

    def wrapped() -> int:
        warnings.formatwarning = _one_line
        try:
            return main() or 0
        except SmlpDeployError as exc:
            flag = flags.get(exc.parameter or "")
            print(f"error: {flag + ': ' if flag else ''}{exc.render(flags)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapped


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              line: str | None = None) -> str:
    return f"warning: {message}\n"
