"""Real photographs shipped with the package, so parity checks compare numbers on natural images anywhere."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_images() -> list[Path]:
    """Paths of the bundled JPEG photographs, sorted by name."""
    root = resources.files(__package__)
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".jpg"))
