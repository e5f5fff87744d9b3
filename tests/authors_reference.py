"""sMLPNet as the authors' code (microsoft/SPACH, models/smlp.py) lays it out, rewritten here from a reading of
that file: the same parameter names and the same computation, including its permutes, so a state dict saved
from it is in the format of their released checkpoints. Used only to test checkpoint conversion."""

from __future__ import annotations

import torch
from torch import nn


class ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class ToChannelsFirst(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim),
                                 nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class NormActConv(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.BN = nn.BatchNorm2d(channels)
        self.Activation = nn.GELU()
        self.Conv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)

    def forward(self, x):
        return self.Conv(self.Activation(self.BN(x)))


class DWConv(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv_merge = NormActConv(channels)

    def forward(self, x):
        return self.conv_merge(x)


class SMLP(nn.Module):
    def __init__(self, size, channels):
        super().__init__()
        self.activation = nn.GELU()
        self.BN = nn.BatchNorm2d(channels)
        self.proj_h = nn.Conv2d(size, size, 1)
        self.proh_w = nn.Conv2d(size, size, 1)
        self.fuse = nn.Conv2d(3 * channels, channels, 1, bias=False)

    def forward(self, x):
        x = self.activation(self.BN(x))
        # (B, C, H, W) -> (B, W, C, H): the 1x1 conv's channels are W.
        a = self.proj_h(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        # (B, C, H, W) -> (B, H, C, W): the 1x1 conv's channels are H.
        b = self.proh_w(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        return self.fuse(torch.cat([x, a, b], dim=1))


class AuthorsSMLPNet(nn.Module):
    def __init__(self, dim, depths, alpha=3, num_classes=1000, image_size=224, patch=4):
        super().__init__()
        self.depths = depths
        grid = image_size // patch
        self.to_patch_embedding = nn.ModuleList()
        self.token_mix = nn.ModuleList()
        self.channel_mix = nn.ModuleList()
        for i, depth in enumerate(depths):
            width = dim * 2**i
            stem = (nn.Conv2d(3, dim, patch, patch, bias=False) if i == 0
                    else nn.Conv2d(width // 2, width, 2, 2, bias=False))
            self.to_patch_embedding.append(nn.Sequential(stem))
            for _ in range(depth):
                self.channel_mix.append(
                    nn.Sequential(ToChannelsLast(), nn.LayerNorm(width), Mlp(width, width * alpha), ToChannelsFirst())
                )
                self.token_mix.append(nn.Sequential(DWConv(width), SMLP(grid // 2**i, width)))
        self.batch_norm = nn.BatchNorm2d(dim * 2 ** (len(depths) - 1))
        self.mlp_head = nn.Sequential(nn.Linear(dim * 2 ** (len(depths) - 1), num_classes))

    def forward(self, x):
        k = 0
        for i, depth in enumerate(self.depths):
            x = self.to_patch_embedding[i](x)
            for _ in range(depth):
                x = x + self.token_mix[k](x)
                x = x + self.channel_mix[k](x)
                k += 1
        return self.mlp_head(self.batch_norm(x).mean(dim=[2, 3]).flatten(1))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and random BatchNorm statistics, so that every parameter matters to the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif name.endswith("weight") and tensor.dim() == 1:
                tensor.copy_(1.0 + torch.randn(tensor.shape, generator=gen) * 0.1)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in**0.5)
    return model.eval()
