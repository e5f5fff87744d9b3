""":func:`create_model`, the one way to build a model: a named variant, its preprocessing, its weights."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .checkpoint import load_checkpoint
from .config import SMLPNetConfig
from .smlpnet import SMLPNet
from .variants import VARIANTS, resolve_name


def check_image_size(image_size: int, config: SMLPNetConfig) -> None:
    """Square inputs whose side divides by the total stride (32): the token grids must halve exactly."""
    stride = config.patch_size * 2 ** (len(config.depths) - 1)
    if not isinstance(image_size, int) or image_size <= 0 or image_size % stride:
        raise InputError(f"image size {image_size!r} is not supported: sMLPNet needs a positive multiple of {stride}",
                         parameter="image_size")


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
    model = SMLPNet(variant.config, num_classes=num_classes, image_size=image_size, variant=variant.name)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
