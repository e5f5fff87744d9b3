"""What every command shares: the toolkit's errors as one clear line naming the flag at fault, exit status 2."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Mapping

from ..environment import import_problem
from ..errors import InputError, SmlpDeployError


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


def check_plotting(plot: object) -> None:
    """Before any work, where a plot is asked for (``plot``, its path, is set): matplotlib must import."""
    if plot and (problem := import_problem("matplotlib")):
        raise InputError(f"plots need matplotlib, and it cannot be imported here ({problem}): pip install "
                         "'smlp-deploy[bench]'", parameter="plot")


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              line: str | None = None) -> str:
    return f"warning: {message}\n"
