"""The reference sMLPNet: variants, checkpoints, preprocessing config, labels and complexity figures."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from ..preprocess_config import PreprocessConfig
    from .checkpoint import load_checkpoint, read_state_dict
    from .complexity import count_macs, count_params
    from .config import SMLPNetConfig
    from .labels import imagenet_labels, imagenet_wnids
    from .registry import create_model
    from .smlpnet import SMLPNet
    from .variants import ALIASES, VARIANTS, resolve_name
