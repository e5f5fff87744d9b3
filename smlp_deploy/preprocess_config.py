"""The preprocessing a model expects, as data that travels with the model and into every manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class PreprocessConfig:
    """The authors' evaluation transform: resize the shorter side, center crop, scale to [0, 1], normalize."""

    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bicubic"
    crop_pct: float = DEFAULT_CROP_PCT
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    @classmethod
    def for_image_size(cls, image_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> PreprocessConfig:
        """The evaluation transform for a given crop: the shorter side is resized to ``image_size / crop_pct``."""
        return cls(input_size=image_size, resize_size=int(image_size / crop_pct), crop_pct=crop_pct)
