from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from smlp_deploy.models import PreprocessConfig
from smlp_deploy.runtime import Preprocessor
from smlp_deploy.samples import sample_images

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photographs shipped with the package."""
    return sample_images()


def photo_batch(image_size: int) -> np.ndarray:
    """The bundled photographs through the real preprocessing, at ``image_size``."""
    return Preprocessor(PreprocessConfig.for_image_size(image_size)).batch(sample_images())


def assert_steps_counted(progress: str) -> None:
    """Progress lines count ``[1/n]`` to ``[n/n]``: the total is the number of steps that ran."""
    counters = [(int(i), int(n)) for i, n in re.findall(r"^\[(\d+)/(\d+)\]", progress, re.M)]
    assert counters and counters == [(i, len(counters)) for i in range(1, len(counters) + 1)], counters


def pytest_collection_modifyitems(config, items):
    """Tests marked ``tensorrt`` (its argument names the flavour: ``tensorrt``, the default, or ``tensorrt-rtx``)
    or ``cuda`` run unchanged on a GPU host and are skipped, with why, elsewhere."""
    import torch

    from smlp_deploy.tensorrt_flavours import FLAVOURS

    cuda = None if torch.cuda.is_available() else "no CUDA GPU"
    for item in items:
        marker = item.get_closest_marker("tensorrt")
        flavour = FLAVOURS[marker.args[0] if marker.args else "tensorrt"] if marker else None
        reason = flavour.run_unavailable() if flavour else cuda if item.get_closest_marker("cuda") else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"needs {flavour.title if flavour else 'cuda'}: {reason}"))
