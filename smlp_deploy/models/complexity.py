"""Model size and compute: the figures the paper's table quotes (parameters, multiply-accumulates)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .smlpnet import SMLPNet


def count_params(model: nn.Module) -> int:
    """Number of learnable parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: SMLPNet, image_size: int | None = None) -> int:
    """Multiply-accumulates for one image, counted by PyTorch's FLOP counter over convs and matmuls.

    Element-wise work (norms, GELU, additions) is left out, as in the paper's GMACs column.
    """
    size = image_size or model.image_size
    param = next(model.parameters())
    x = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
    counter = FlopCounterMode(display=False)  # its __enter__ is untyped: the counter is used by its own name
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2
