"""Accuracy on a labeled image folder (ImageNet validation layout): top-1 and top-5 for one or more models, and
for every artifact of an export that runs here.

Images are decoded and preprocessed once per batch and fed to every model, so comparing precisions costs one
decode pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import Arg, InputError
from .imagefolder import LabeledFolder
from .manifest import IMAGENET_LABELS, Accuracy, Artifact, Manifest
from .models.labels import imagenet_labels, imagenet_wnids
from .progress import progress_bar
from .runtime.backends.factory import load_backend
from .runtime.preprocess import Preprocessor
from .tensorrt.capabilities import engine_unavailable

if TYPE_CHECKING:  # torch: smlp-eval imports this module, and its --help and argument errors do without it
    from .models.smlpnet import SMLPNet

Logits = Callable[[np.ndarray], np.ndarray]  # [N, 3, H, W] float32 -> [N, classes]


def class_indices(
    classes: list[str], labels: str | list[str], num_classes: int, *, sorted_order: bool = False,
    sortable: bool = True,
) -> dict[str, int]:
    """Map class folder names to model outputs.

    A folder may be named by the class's index (``281``), its label (``tabby``; for ImageNet also its WordNet id
    ``n02123045`` or another of its WordNet lemmas, ``tabby cat``); case, ``_`` and ``-`` do not matter. An
    index, id or label wins over another class's secondary lemma (``missile`` is class 657's label and a lemma
    of 744, "projectile, missile"). A name that matches no class, or several equally, is an error listing it.
    ``sorted_order`` maps the folders in sorted order to outputs 0, 1, ... instead, for models trained that way;
    ``sortable=False`` says the caller offers no such choice, so the error does not suggest it.
    """
    if sorted_order:
        if len(classes) > num_classes:
            raise InputError(f"the folder has {len(classes)} class subfolders but the model has {num_classes} "
                             "outputs", parameter="sorted_order")
        return {c: i for i, c in enumerate(classes)}
    primary, secondary = _class_lookup(labels, num_classes)
    found, unknown, ambiguous = {}, [], []
    for name in classes:
        matches = sorted(primary.get(_normal(name)) or secondary.get(_normal(name)) or ())
        if len(matches) == 1:
            found[name] = matches[0]
        elif matches:
            ambiguous.append(f"{name} ({', '.join(map(str, matches))})")
        else:
            unknown.append(name)
    if unknown or ambiguous:
        listed = f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}"
        problems = ([f"{_folders(len(unknown))} no class: {listed}"] if unknown else []) + (
            [f"ambiguous: {', '.join(ambiguous)}"] if ambiguous else [])
        sort = (", or map folders in sorted order to outputs 0, 1, ... (", Arg("sorted_order"), ")") if sortable else ()
        raise InputError(f"class folders must be named by a class index, label or WordNet id; {'; '.join(problems)}. "
                         "Rename them", *sort, parameter="data")
    twice = {i for i in found.values() if list(found.values()).count(i) > 1}
    if twice:
        names = [n for n, i in found.items() if i in twice]
        raise InputError(f"class folders {', '.join(names)} name the same class", parameter="data")
    return found


def _folders(n: int) -> str:
    return "1 folder matches" if n == 1 else f"{n} folders match"


def _class_lookup(labels: str | list[str], num_classes: int) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """Each class's names, normalized, to the classes they name: indices, ids and labels; then other lemmas."""
    primary: dict[str, set[int]] = {}
    secondary: dict[str, set[int]] = {}
    for i in range(num_classes):
        primary.setdefault(str(i), set()).add(i)
    if labels == IMAGENET_LABELS:
        for i, (wnid, lemmas) in enumerate(zip(imagenet_wnids(), imagenet_labels(full=True), strict=True)):
            label, *others = lemmas.split(", ")
            for name, table in ((wnid, primary), (label, primary), *((o, secondary) for o in others)):
                table.setdefault(_normal(name), set()).add(i)
    else:
        for i, label in enumerate(labels):
            primary.setdefault(_normal(label), set()).add(i)
    return primary, secondary


def _normal(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


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
    for start in progress_bar(range(0, len(targets), batch_size), desc="evaluating", unit="batch", quiet=quiet):
        paths = [path for path, _ in folder.samples[start : start + batch_size]]
        batch = np.stack([preprocessor(p, name=str(p)) for p in paths])
        expected = targets[start : start + batch_size, None]
        for name, run in models.items():
            top5 = np.argsort(-run(batch), axis=1)[:, :5]
            hits1[name] += int(np.sum(top5[:, :1] == expected))
            hits5[name] += int(np.sum(np.any(top5 == expected, axis=1)))
    n = len(targets)
    return {name: Accuracy(hits1[name] / n, hits5[name] / n, n) for name in models}


def runs_here(manifest: Manifest) -> tuple[list[Artifact], list[Artifact]]:
    """The artifacts of ``manifest`` that run on this machine, and the engines that do not (built for a GPU, or a
    flavour, this machine lacks)."""
    runnable: list[Artifact] = []
    elsewhere: list[Artifact] = []
    for artifact in manifest.artifacts:
        kind = artifact.kind
        (elsewhere if kind is not None and engine_unavailable(kind) else runnable).append(artifact)
    return runnable, elsewhere


def evaluate_artifacts(model: SMLPNet, manifest: Manifest, export_dir: Path, folder: LabeledFolder, *,
                       say: Callable[[str], None], quiet: bool) -> None:
    """Top-1/top-5 of the PyTorch ``model`` and of every artifact of the export in ``export_dir`` that runs here,
    on ``folder``, written into ``manifest``; engines built for GPUs this machine lacks (TensorRT for RTX's, built
    anywhere) are left to smlp-eval there."""
    from .runtime.backends.torch_backend import TorchBackend

    runnable, elsewhere = runs_here(manifest)
    if elsewhere:
        say(f"not evaluated here (no GPU that runs them): {', '.join(a.path for a in elsewhere)}")
    indices = class_indices(folder.classes, manifest.labels, manifest.model.num_classes, sortable=False)
    with contextlib.ExitStack() as opened:  # every backend opened is closed, also when a later one fails to load
        backends = {a.path: opened.enter_context(load_backend(export_dir / a.path, model_info=manifest.model))
                    for a in runnable}
        reference = opened.enter_context(TorchBackend(model, device="cpu"))
        models: dict[str, Logits] = {"pytorch": reference.run, **{n: b.run_all for n, b in backends.items()}}
        scores = evaluate(models, folder, Preprocessor(manifest.preprocess), indices, quiet=quiet)
    manifest.model.accuracy = replace(scores.pop("pytorch"), dataset=str(folder.root))
    for artifact in runnable:
        artifact.accuracy = scores[artifact.path]
