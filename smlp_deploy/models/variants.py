"""The named sMLPNet variants: the paper's three sizes and a small one for tests."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .config import SMLPNetConfig


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
        raise InputError(f"unknown model {name!r}; known models: {known}", parameter="variant")
    return full



def short_name(name: str) -> str:
    """``smlpnet_tiny`` -> ``tiny``, the name users type."""
    return next((alias for alias, full in ALIASES.items() if full == name), name)
