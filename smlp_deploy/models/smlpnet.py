"""The sMLPNet network (Tang et al., AAAI 2022), one module per part of the paper's figure.

Tensors stay NCHW between blocks, as in the authors' implementation, so that their checkpoints load unchanged
(see ``checkpoint.py``). Module names say what each part computes: ``mix_w`` mixes tokens along the width axis
and ``mix_h`` along the height axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess_config import PreprocessConfig
from .config import SMLPNetConfig


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training; identity at inference."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class AxisLinear(nn.Module):
    """A linear map along one spatial axis of an NCHW tensor, shared over channels and the other axis.

    ``axis=-1`` mixes along W (``x @ weight.T``); ``axis=-2`` mixes along H (``weight @ x``). Both are a single
    MatMul in the exported graph: no transposes are needed.
    """

    def __init__(self, size: int, axis: int):
        super().__init__()
        if axis not in (-1, -2):
            raise ValueError(f"axis must be -1 (W) or -2 (H), got {axis}")
        self.axis = axis
        self.weight = nn.Parameter(torch.empty(size, size))
        self.bias = nn.Parameter(torch.empty(size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same initialisation as the authors' 1x1 Conv2d(size, size).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis == -1:
            return F.linear(x, self.weight, self.bias)
        return torch.matmul(self.weight, x) + self.bias.unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"size={self.weight.shape[0]}, axis={'W' if self.axis == -1 else 'H'}"


class DepthwiseConv(nn.Module):
    """BatchNorm -> GELU -> 3x3 depthwise conv: the local token mixing in front of the sparse MLP."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class SparseMLP(nn.Module):
    """The sMLP block: each token mixes only with its row and its column.

    Three branches (identity, W-mixing, H-mixing) are concatenated on channels in the authors' order and fused
    back to ``channels`` by a 1x1 conv.
    """

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.GELU()
        self.mix_w = AxisLinear(size, axis=-1)
        self.mix_h = AxisLinear(size, axis=-2)
        self.fuse = nn.Conv2d(3 * channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(x))
        return self.fuse(torch.cat([x, self.mix_w(x), self.mix_h(x)], dim=1))


class TokenMixer(nn.Module):
    """Depthwise conv followed by the sparse MLP; one residual branch."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.dwconv = DepthwiseConv(channels)
        self.smlp = SparseMLP(channels, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.smlp(self.dwconv(x))


class ChannelMLP(nn.Module):
    """LayerNorm over channels -> Linear(C, alpha*C) -> GELU -> Linear(alpha*C, C), applied per token."""

    def __init__(self, channels: int, alpha: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, alpha * channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(alpha * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = self.fc2(self.act(self.fc1(self.norm(x))))
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    """``x + token_mix(x)``, then ``x + channel_mix(x)``."""

    def __init__(self, channels: int, size: int, alpha: int, drop_path: float):
        super().__init__()
        self.token_mix = TokenMixer(channels, size)
        self.channel_mix = ChannelMLP(channels, alpha)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.token_mix(x))
        return x + self.drop_path(self.channel_mix(x))


class Stage(nn.Module):
    """A strided conv that embeds or merges patches, then ``depth`` blocks at one resolution."""

    def __init__(self, in_dim: int, dim: int, stride: int, size: int, depth: int, alpha: int, drop_paths: list[float]):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, stride, stride=stride, bias=False)
        self.blocks = nn.Sequential(*(Block(dim, size, alpha, drop_paths[i]) for i in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """BatchNorm -> global average pool -> Linear."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).mean(dim=(2, 3)))


class SMLPNet(nn.Module):
    """sMLPNet for square inputs of ``image_size`` pixels (the token-mixing weights are sized by it)."""

    def __init__(self, config: SMLPNetConfig, *, num_classes: int = 1000, image_size: int = 224, in_chans: int = 3,
                 variant: str = "smlpnet"):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.image_size = image_size
        self.variant = variant  # the registered name (create_model's), "smlpnet" for a configuration of one's own
        self.preprocess = PreprocessConfig.for_image_size(image_size)  # the evaluation transform of its inputs
        dims, sizes = config.stage_dims(), config.stage_sizes(image_size)
        n_blocks = sum(config.depths)
        # Linear decay of the drop-path rate over all blocks, as in the paper's training recipe.
        rates = [config.drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        stages, start = [], 0
        for i, depth in enumerate(config.depths):
            in_dim, stride = (in_chans, config.patch_size) if i == 0 else (dims[i - 1], 2)
            stages.append(Stage(in_dim, dims[i], stride, sizes[i], depth, config.alpha, rates[start : start + depth]))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.head = Head(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x))
