"""What a command's flags need beyond the core install, checked before the command does any work.

A run that would fail at its end (a plot drawn after a ten-minute benchmark) fails at its start instead, in one
line that names the flag and the install: ``error: --plot: cannot import matplotlib (...): pip install
'smlp-deploy[bench]'``, exit status 2 (through :func:`~smlp_deploy.cli.common.run_main`).
"""

from __future__ import annotations

from ..checkup import Extra, import_problems
from ..errors import BackendUnavailableError
from ..runtime.backends.registry import BACKENDS


def require_extra(parameter: str, extra: str) -> None:
    """The libraries of smlp-deploy's ``extra`` (``"bench"``: matplotlib) import here; else an error for the flag
    ``parameter`` stands for, naming what fails to import and the install."""
    if missing := import_problems(extra):
        raise BackendUnavailableError(Extra(extra, True, missing).needs, parameter=parameter)


def require_backend(parameter: str, name: str | None) -> None:
    """Backend ``name`` of the registry can run here (its library imports, its device is there); else an error for
    the flag ``parameter`` stands for, with the install or the reason. None (each file's own backend) passes."""
    info = BACKENDS.get(name or "")
    reason = info.unavailable() if info is not None else None
    if reason:
        raise BackendUnavailableError(f"backend {name!r} cannot run here: {reason}", parameter=parameter)
