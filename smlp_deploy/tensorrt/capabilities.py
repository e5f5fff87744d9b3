"""Which GPUs an engine is for, and whether it runs on this one: the compute capabilities a build targets, and
the one answer to "does this engine run here" that the export's verification and evaluation both ask."""

from __future__ import annotations

from ..artifacts import ArtifactKind, runs_precision
from ..errors import InputError
from .flavours import Flavour, current_compute_capability
from .rtx import supported_capabilities


def target_capabilities(flavour: Flavour, requested: tuple[str, ...] | None) -> tuple[str, ...]:
    """The compute capabilities an engine of ``flavour`` will run on: the requested ones (checked against what the
    library can build for, before any work), the flavour's default set, or the GPU it is built on."""
    if not flavour.builds_without_gpu:
        if requested:
            raise InputError(f"{flavour.title} builds for the GPU it runs on ({current_compute_capability()} "
                             "here); compute capabilities are chosen for TensorRT for RTX engines only",
                             parameter="compute_capabilities")
        return (current_compute_capability(),)
    supported = supported_capabilities()
    if requested is None:  # the library's own set, written out; 7.5 (Turing) only on request, as NVIDIA advises
        return tuple(c for c in supported if c != "7.5")
    unknown = [c for c in requested if c not in supported]
    if unknown or not requested:
        raise InputError(f"{flavour.title} {flavour.version()} cannot build for compute capability "
                         f"{', '.join(unknown) or 'none'}: it builds for {', '.join(supported)} (9.0 and 10.0, "
                         "H100/H200/B200, take TensorRT engines)", parameter="compute_capabilities")
    return tuple(c for i, c in enumerate(requested) if c not in requested[:i])


def precision_unavailable(precision: str) -> str | None:
    """Why this GPU does not run ``precision``'s engines (FP8 before compute capability 8.9), or None."""
    capability = current_compute_capability()
    if runs_precision(capability, precision):
        return None
    return f"{precision.upper()} engines need a GPU with {precision.upper()}, and this one is compute capability " \
        f"{capability}"


def engine_unavailable(kind: ArtifactKind) -> str | None:
    """Why the engine ``kind`` cannot run here (its flavour's library, no GPU, a GPU its flavour or its precision
    does not run), or None where it runs; None for a file that is not an engine."""
    if kind.flavour is None:
        return None
    return kind.flavour.run_unavailable() or precision_unavailable(kind.precision)
