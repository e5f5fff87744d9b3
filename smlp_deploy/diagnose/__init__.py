"""Diagnosis of reduced-precision artifacts: where their error enters, module by module, against PyTorch."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .layers import LayerReport, LayerRow, layer_report
