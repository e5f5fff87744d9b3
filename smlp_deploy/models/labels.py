"""ImageNet-1k class names, shipped with the package (index -> WordNet id and readable name)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def _imagenet_rows() -> tuple[tuple[str, str], ...]:
    text = resources.files(__package__).joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t", 1)) for line in text.splitlines())  # type: ignore[misc]


def imagenet_labels(full: bool = False) -> list[str]:
    """The 1000 class names in index order: the first WordNet lemma (``"tench"``), or all of them if ``full``."""
    return [names if full else names.split(",")[0] for _, names in _imagenet_rows()]


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids (``"n01440764"``) in index order: the folder names of ImageNet's layout."""
    return [wnid for wnid, _ in _imagenet_rows()]
