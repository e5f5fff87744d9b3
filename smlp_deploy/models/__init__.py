"""The reference sMLPNet: variants, checkpoints, preprocessing config, labels and complexity figures."""

from .checkpoint import load_checkpoint, read_state_dict
from .complexity import count_macs, count_params
from .labels import imagenet_labels, imagenet_wnids
from .preprocess_config import PreprocessConfig
from .registry import ALIASES, VARIANTS, create_model, resolve_name
from .smlpnet import SMLPNet, SMLPNetConfig

__all__ = [
    "ALIASES", "VARIANTS", "PreprocessConfig", "SMLPNet", "SMLPNetConfig", "count_macs", "count_params",
    "create_model", "imagenet_labels", "imagenet_wnids", "load_checkpoint", "read_state_dict", "resolve_name",
]
