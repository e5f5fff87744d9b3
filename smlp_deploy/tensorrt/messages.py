"""TensorRT's log, of either flavour: an ``ILogger`` that hands warnings and errors to ``logging`` and, while a
thread captures, to that thread's list, so a failed call reports the messages of that call only.

The builder and the engine runner share it (``tensorrt.builder``, ``tensorrt.engine``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .flavours import TensorRTModule

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)


class TensorRTMessages:
    """Where TensorRT's log goes: warnings and errors to ``logging`` (unless ``echo`` is off: the builder reports
    them itself, once each); while a thread captures, also into a list that holds that thread's messages only."""

    def __init__(self, echo: bool = True) -> None:
        self._local = threading.local()
        self.echo = echo

    def record(self, level: int, message: str) -> None:
        if level >= logging.WARNING:
            if self.echo:
                log.log(level, "TensorRT: %s", message)
            captured: list[str] | None = getattr(self._local, "captured", None)
            if captured is not None:
                captured.append(message)

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """The warnings and errors this thread's TensorRT calls log inside the ``with`` block."""
        outer: list[str] | None = getattr(self._local, "captured", None)
        captured: list[str] = []
        self._local.captured = captured
        try:
            yield captured
        finally:
            self._local.captured = outer


def tensorrt_logger(api: TensorRTModule, messages: TensorRTMessages) -> trt.ILogger:
    """An ``ILogger`` of ``api``'s (the flavour's module) writing to ``messages``."""
    severity = api.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.CRITICAL, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.INFO, severity.VERBOSE: logging.DEBUG}

    # mypy cannot take a base class from a module chosen at run time; TensorRTModule types every other use.
    class Logger(api.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            api.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            messages.record(levels.get(severity, logging.ERROR), msg)

    logger: trt.ILogger = Logger()
    return logger


def join_messages(messages: list[str]) -> str:
    return "; ".join(messages) or "TensorRT logged no message"


def distinct(messages: list[str]) -> str:
    """Messages once each, with their counts: the builder repeats a warning for every layer it applies to."""
    counts = Counter(message.strip() for message in messages)
    return "; ".join(f"{text} (x{n})" if n > 1 else text for text, n in counts.items())
