"""sMLPNet's architecture hyper-parameters, apart from the network so that naming variants needs no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SMLPNetConfig:
    """Architecture hyper-parameters; ``variants.py`` names the published ones."""

    dim: int = 80
    depths: tuple[int, ...] = (2, 8, 14, 2)
    alpha: int = 3
    patch_size: int = 4
    drop_path_rate: float = 0.0

    def stage_dims(self) -> list[int]:
        return [self.dim * 2**i for i in range(len(self.depths))]

    def stage_sizes(self, image_size: int) -> list[int]:
        """Token grid side of each stage: patch embedding, then a halving per stage."""
        first = image_size // self.patch_size
        return [first // 2**i for i in range(len(self.depths))]
