"""Triton Inference Server: model repositories from exports, and a local server to run them (extra ``serve``)."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from ..environment import find_tritonserver
    from .repository import TritonModel, TritonRepository, write_triton_repository
    from .server import LocalTritonServer
