"""Accuracy on a labeled image folder (ImageNet validation layout): top-1 and top-5 for one or more models.

Images are decoded and preprocessed once per batch and fed to every model, so comparing precisions costs one
decode pass.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from tqdm import tqdm

from .errors import InputError
from .imagefolder import LabeledFolder
from .manifest import IMAGENET_LABELS, Accuracy
from .models.labels import imagenet_wnids
from .runtime.preprocess import Preprocessor

Logits = Callable[[np.ndarray], np.ndarray]  # [N, 3, H, W] float32 -> [N, classes]


def class_indices(classes: list[str], labels: list[str] | str, num_classes: int) -> dict[str, int]:
    """Map folder names to model outputs: by label name, by ImageNet wnid, or else by sorted folder order."""
    if labels == IMAGENET_LABELS:
        wnids = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
        if all(c in wnids for c in classes):
            return {c: wnids[c] for c in classes}
    elif isinstance(labels, list) and all(c in labels for c in classes):
        return {c: labels.index(c) for c in classes}
    if len(classes) > num_classes:
        raise InputError(f"the folder has {len(classes)} class subfolders but the model has {num_classes} outputs, "
                         "and the folder names are neither its labels nor ImageNet wnids", parameter="data")
    return {c: i for i, c in enumerate(classes)}


def evaluate(
    models: Mapping[str, Logits],
    folder: LabeledFolder,
    preprocessor: Preprocessor,
    indices: dict[str, int],
    *,
    batch_size: int = 32,
    quiet: bool = False,
) -> dict[str, Accuracy]:
    """Top-1/top-5 of each model in ``models`` on every image of ``folder``."""
    targets = np.array([indices[name] for _, name in folder.samples])
    hits1 = {name: 0 for name in models}
    hits5 = {name: 0 for name in models}
    for start in tqdm(range(0, len(targets), batch_size), desc="evaluating", unit="batch", disable=quiet,
                      leave=False):
        paths = [path for path, _ in folder.samples[start : start + batch_size]]
        batch = np.stack([preprocessor(p, name=str(p)) for p in paths])
        expected = targets[start : start + batch_size, None]
        for name, run in models.items():
            top5 = np.argsort(-run(batch), axis=1)[:, :5]
            hits1[name] += int(np.sum(top5[:, :1] == expected))
            hits5[name] += int(np.sum(np.any(top5 == expected, axis=1)))
    n = len(targets)
    return {name: Accuracy(hits1[name] / n, hits5[name] / n, n) for name in models}
