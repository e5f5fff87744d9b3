"""Named sMLPNet variants and :func:`create_model`, the one way to build a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .preprocess_config import PreprocessConfig
from .smlpnet import SMLPNet, SMLPNetConfig


@dataclass(frozen=True)
class Variant:
    name: str
    config: SMLPNetConfig
    description: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("smlpnet_tiny", SMLPNetConfig(dim=80, depths=(2, 8, 14, 2), drop_path_rate=0.0),
                "sMLPNet-T: 24.1M params, 5.0 GMACs, 81.9% ImageNet top-1"),
        Variant("smlpnet_small", SMLPNetConfig(dim=96, depths=(2, 10, 24, 2), drop_path_rate=0.2),
                "sMLPNet-S: 48.6M params, 10.3 GMACs, 83.1% ImageNet top-1"),
        Variant("smlpnet_base", SMLPNetConfig(dim=112, depths=(2, 10, 24, 2), drop_path_rate=0.3),
                "sMLPNet-B: 65.9M params, 14.0 GMACs, 83.4% ImageNet top-1"),
        # Not from the paper: the same architecture at a size that trains and tests in seconds on a CPU.
        Variant("smlpnet_test", SMLPNetConfig(dim=16, depths=(1, 1, 2, 1), alpha=2),
                "test configuration: same architecture, a few thousand parameters"),
    )
}
ALIASES = {"tiny": "smlpnet_tiny", "small": "smlpnet_small", "base": "smlpnet_base", "test": "smlpnet_test"}


def resolve_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases (``tiny`` -> ``smlpnet_tiny``)."""
    full = ALIASES.get(name, name)
    if full not in VARIANTS:
        known = ", ".join(sorted(VARIANTS) + sorted(ALIASES))
        raise InputError(f"unknown model {name!r}; known models: {known}")
    return full


def check_image_size(image_size: int, config: SMLPNetConfig) -> None:
    """Square inputs whose side divides by the total stride (32): the token grids must halve exactly."""
    stride = config.patch_size * 2 ** (len(config.depths) - 1)
    if not isinstance(image_size, int) or image_size <= 0 or image_size % stride:
        raise InputError(f"image_size={image_size!r} is not supported: sMLPNet needs a positive multiple of {stride}")


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    image_size: int = 224,
    checkpoint: str | Path | None = None,
) -> SMLPNet:
    """Build a variant by name (``smlpnet_tiny`` or ``tiny``, ...) in eval mode, optionally loading a checkpoint.

    The model carries ``variant`` (its registered name) and ``preprocess`` (its :class:`PreprocessConfig`).
    """
    variant = VARIANTS[resolve_name(name)]
    check_image_size(image_size, variant.config)
    model = SMLPNet(variant.config, num_classes=num_classes, image_size=image_size)
    model.variant = variant.name
    model.preprocess = PreprocessConfig.for_image_size(image_size)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model.eval()
