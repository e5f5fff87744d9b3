"""The toolkit's error family.

Every error raised for bad input or a failed step derives from :class:`SmlpDeployError`, so callers can catch
one type. Errors about what the caller passed in also derive from :class:`ValueError`.

An error about one argument names it in ``parameter`` (``"calib_dir"``), so a command-line front end can point
at its own flag for it instead. A fix that names an argument or a function is written once, as an :class:`Arg` or
:class:`Words` among the message's parts, and read in the words of where it is read: ``str(error)`` speaks to a
Python caller (``pass resume=True``), ``error.render(flags)`` to the user of a command, through that command's
map of parameters to flags (``pass --resume``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Flags = Mapping[str, str]  # a command's flag for each API parameter: {"calib_dir": "--calib-dir"}


@dataclass(frozen=True)
class Arg:
    """An argument a message asks for: ``resume=True`` to a Python caller, ``--resume`` on a command line
    (``num_classes=10`` and ``--num-classes 10``). A command without a flag for it gets the Python words."""

    parameter: str
    value: object = True

    def render(self, flags: Flags | None) -> str:
        flag = flags.get(self.parameter) if flags is not None else None
        if flag is None:
            return f"{self.parameter}={self.value!r}"
        if self.value is True:
            return flag
        return f"{flag} {self.value}" if flag.startswith("-") else str(self.value)


@dataclass(frozen=True)
class Words:
    """The same thing in each reader's words: a function and its command, or an option only the API has."""

    api: str  # "smlp_deploy.export.export_model"
    cli: str  # "smlp-export"

    def render(self, flags: Flags | None) -> str:
        return self.api if flags is None else self.cli


Part = str | Arg | Words


class SmlpDeployError(Exception):
    """Base of every error this toolkit raises on purpose. Its message is its parts joined: text, and the
    :class:`Arg` and :class:`Words` parts rendered for the reader."""

    def __init__(self, *parts: Part, parameter: str | None = None):
        self.parts = parts
        self.parameter = parameter
        super().__init__(self.render())

    def render(self, flags: Flags | None = None) -> str:
        """The message for a Python caller (``flags`` None), or for a command with these ``flags``."""
        return "".join(part if isinstance(part, str) else part.render(flags) for part in self.parts)


class InputError(SmlpDeployError, ValueError):
    """An argument, file or image given to the toolkit is unusable; the message names it."""


class CheckpointError(InputError):
    """A checkpoint cannot be read, or does not fit the requested model."""


class ImageError(InputError):
    """An image cannot be decoded or converted; the message names the image (path or batch index)."""


class ArtifactError(InputError):
    """An exported artifact (ONNX file, engine, manifest) is missing, corrupt or does not match its manifest."""


class CalibrationError(InputError):
    """Calibration cannot run: no usable images, or a calibration cache that cannot be used."""


class OutputError(SmlpDeployError):
    """A result cannot be written (disk full, read-only folder, no permission); the message names the path."""


class ParityError(SmlpDeployError):
    """An artifact's outputs differ from the PyTorch reference by more than the allowed threshold."""


class ScoreError(SmlpDeployError):
    """An artifact returned non-finite scores (NaN or inf) for an input; the message names the artifact and the
    input. Commands with a row per image (smlp-predict, Ray) put it in that image's row."""


class AccuracyError(SmlpDeployError):
    """A reduced-precision artifact cannot be made to meet the accuracy budget asked of it; the message says what
    each remedy reached and what to try."""


class BackendUnavailableError(SmlpDeployError):
    """A backend (TensorRT, a GPU, onnxruntime-gpu) is not installed or not usable on this machine."""


EXPORT_MODEL = Words("smlp_deploy.export.export_model", "smlp-export")  # the fix for a missing or stale export
