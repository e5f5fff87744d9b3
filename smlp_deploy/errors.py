"""The toolkit's error family.

Every error raised for bad input or a failed step derives from :class:`SmlpDeployError`, so callers can catch
one type. Errors about what the caller passed in also derive from :class:`ValueError`.

Messages speak in terms of the Python API and the values given. An error about one argument names it in
``parameter`` (``"calib_dir"``), so a command-line front end can point at its own flag for it instead.
"""

from __future__ import annotations


class SmlpDeployError(Exception):
    """Base of every error this toolkit raises on purpose."""

    def __init__(self, message: str, *, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


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


class BackendUnavailableError(SmlpDeployError):
    """A backend (TensorRT, a GPU, onnxruntime-gpu) is not installed or not usable on this machine."""
