"""Keeping a library's chatter off a command's terminal, for a run that goes well.

Ray prints a token-auth notice (a log record) and C++ ``core_worker.cc`` lines (written to file descriptor 2 by
its native core) on clean runs. Within :func:`library_chatter_to_file`, log records below ERROR are dropped (this
toolkit speaks to users through warnings, not logging) and file descriptor 2 goes to a log file, while this
process's Python-level stderr (warnings, progress bars, errors) stays on the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def library_chatter_to_file(library: str) -> Iterator[Path]:
    """The log file (yielded) is removed afterwards, unless the block raised and something was written there:
    then it is kept and named on stderr."""
    made, name = tempfile.mkstemp(prefix=f"smlp-{library}-", suffix=".log")
    os.close(made)
    log = Path(name)
    sys.stderr.flush()
    terminal, python_stderr = os.dup(2), sys.stderr
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=python_stderr.encoding,
                           errors=python_stderr.errors)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    failed = True
    try:
        yield log
        failed = False
    finally:
        logging.disable(previous)
        os.dup2(terminal, 2)
        os.close(terminal)
        sys.stderr.flush()  # left open: handlers the library made in the block may still write to it
        sys.stderr = python_stderr
        if failed and log.stat().st_size:
            print(f"({library}'s own messages: {log})", file=sys.stderr)
        else:
            log.unlink()
