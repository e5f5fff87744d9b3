"""A model on which INT8 really loses: the trained digits model with a few channels made into outliers, its FP32
function unchanged.

Real networks grow outlier channels through the scale symmetry of a normalization followed by a linear layer; this
fixture makes them that way. In the channel MLP of each chosen block, LayerNorm's affine weight and bias of channel
``c`` are multiplied by ``k`` and column ``c`` of fc1's weight (its input channel ``c``) is divided by ``k``: fc1
sees the same products, so the logits are the FP32 ones up to rounding (max relative difference about 1e-7, checked
in tests/test_accuracy_fixture.py), while the per-tensor scale of fc1's input grows ``k`` times and every other
channel of it is left with a few INT8 levels.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

# The table (2 channels a block, the TensorRT form's worst-image cosine on main): 100 still passes the
# parity gate (0.94), 150 (0.81), 250 (0.33) and 1000 (0.03) are refused.
K_VALUES = (100, 150, 250, 1000)
CHANNELS_PER_BLOCK = 2


@dataclass(frozen=True)
class Outliers:
    """What was rescaled: ``k`` and, for each channel MLP (its module path), the channels."""

    k: float
    channels: dict[str, tuple[int, ...]]


def channel_mlps(model: nn.Module) -> list[str]:
    """The module paths of the model's channel MLPs (LayerNorm -> fc1 -> GELU -> fc2), in depth order."""
    return [name for name, module in model.named_modules() if isinstance(getattr(module, "norm", None), nn.LayerNorm)
            and isinstance(getattr(module, "fc1", None), nn.Linear)]


def choose_channels(model: nn.Module, per_block: int = CHANNELS_PER_BLOCK, *, blocks: Sequence[str] | None = None,
                    seed: int = 0) -> dict[str, tuple[int, ...]]:
    """``per_block`` distinct channels drawn (by ``seed``) for each channel MLP in ``blocks`` (default: all)."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for name in blocks if blocks is not None else channel_mlps(model):
        width = model.get_submodule(name).norm.normalized_shape[0]
        chosen[name] = tuple(sorted(int(c) for c in rng.choice(width, per_block, replace=False)))
    return chosen


def with_outliers(model: nn.Module, k: float, channels: Mapping[str, Sequence[int]]) -> tuple[nn.Module, Outliers]:
    """A copy of ``model`` with LayerNorm's affine of each listed channel times ``k`` and fc1's input column of it
    divided by ``k``, in each listed channel MLP; ``model`` itself is left as it was."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    rescaled = copy.deepcopy(model)
    with torch.no_grad():
        for name, picked in channels.items():
            mlp = rescaled.get_submodule(name)
            index = torch.tensor(list(picked), dtype=torch.long)
            mlp.norm.weight[index] *= k
            mlp.norm.bias[index] *= k
            mlp.fc1.weight[:, index] /= k
    return rescaled, Outliers(float(k), {name: tuple(int(c) for c in picked) for name, picked in channels.items()})


def save_checkpoint(model: nn.Module, path: Path) -> Path:
    """The model's state dict where ``export_model(checkpoint=...)`` reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def max_relative_difference(a: nn.Module, b: nn.Module, inputs: torch.Tensor) -> float:
    """max |a(x) - b(x)| over the largest |a(x)|: how far the rescale moved the FP32 logits."""
    with torch.inference_mode():
        x, y = a.eval()(inputs), b.eval()(inputs)
    return float((x - y).abs().max() / x.abs().max())
