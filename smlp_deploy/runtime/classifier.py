"""Classifier: an artifact's backend composed with its preprocessing and labels.

``Classifier('engine.fp16.plan').predict(image)`` -> ``Prediction``. The manifest beside the artifact gives
the preprocessing, labels and model; without one, ImageNet defaults are used with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ArtifactError, InputError
from ..fileio import sha256_file
from ..manifest import IMAGENET_LABELS, MANIFEST_NAME, Manifest
from ..models.labels import imagenet_labels
from ..preprocess_config import PreprocessConfig
from .backends.base import Backend
from .backends.factory import check_artifact_path, load_backend
from .preprocess import ImageSource, Preprocessor

DEFAULT_MAX_BATCH = 32  # for backends without a limit of their own


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float  # softmax probability
    topk: list[tuple[int, str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": self.score,
                "topk": [{"index": i, "label": lab, "score": s} for i, lab, s in self.topk]}


class Classifier:
    """Batched image classification with any exported artifact.

    Thread safety: one Classifier may be shared by threads; ONNX Runtime sessions and eager PyTorch are
    thread-safe, and the TensorRT backend keeps one execution context per thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        backend: str | None = None,
        device: str | None = None,
        max_batch_size: int | None = None,
        threads: int | None = None,
    ):
        self.path = Path(path)
        check_artifact_path(self.path)
        self.manifest = Manifest.beside(self.path)
        if self.manifest is not None:
            self._check_recorded(self.manifest)
        self.backend: Backend = load_backend(self.path, backend, device=device, threads=threads,
                                             model_info=self.manifest.model if self.manifest else None)
        if self.manifest is not None:
            config, labels = self.manifest.preprocess, label_names(self.manifest.labels)
        else:
            config, labels = self._defaults()
        if self.backend.num_classes and len(labels) != self.backend.num_classes:
            raise ArtifactError(f"{self.path} has {self.backend.num_classes} outputs but its manifest lists "
                                f"{len(labels)} labels: re-export it")
        self.preprocess = Preprocessor(config)
        self.labels = labels
        limits = [b for b in (self.backend.max_batch_size, max_batch_size) if b]
        self.max_batch_size = min(limits) if limits else DEFAULT_MAX_BATCH

    def _check_recorded(self, manifest: Manifest) -> None:
        entry = manifest.artifact(self.path.name)
        if entry is not None and sha256_file(self.path) != entry.sha256:
            raise ArtifactError(
                f"{self.path} does not match the sha256 recorded in {self.path.parent / MANIFEST_NAME}: the file "
                "changed after it was verified; re-export it"
            )

    def _defaults(self) -> tuple[PreprocessConfig, list[str]]:
        """Without a manifest: ImageNet preprocessing at the input size the artifact declares, ImageNet labels
        for 1000 outputs and class numbers otherwise."""
        size = self.backend.input_shape[-1] or PreprocessConfig().input_size
        classes = self.backend.num_classes or 1000
        labels = imagenet_labels() if classes == 1000 else [str(i) for i in range(classes)]
        warnings.warn(
            f"no {MANIFEST_NAME} beside {self.path}: assuming ImageNet preprocessing at {size}x{size}"
            + (" and ImageNet labels" if classes == 1000 else f" and {classes} unnamed classes"),
            stacklevel=3,
        )
        return PreprocessConfig.for_image_size(size), labels

    def describe(self) -> str:
        return self.backend.describe()

    def logits(self, images: ImageSource | Sequence[ImageSource] | np.ndarray) -> np.ndarray:
        """Raw logits [N, classes] for one image, a list, or a preprocessed batch [N, 3, H, W]."""
        batch, _ = self._as_list(images)
        return self._run(batch)

    def predict(self, images, topk: int = 5) -> Prediction | list[Prediction]:
        """Top-``topk`` predictions: one ``Prediction`` for one image, a list (in order) for a list or a batch."""
        batch, single = self._as_list(images)
        logits = self._run(batch)
        predictions = [self._prediction(row, topk) for row in logits]
        return predictions[0] if single else predictions

    def _prediction(self, logits: np.ndarray, topk: int) -> Prediction:
        shifted = np.exp(logits - logits.max())
        probs = shifted / shifted.sum()
        order = np.argsort(-probs)[: max(1, topk)]
        top = [(int(i), self.labels[i], float(probs[i])) for i in order]
        return Prediction(top[0][0], top[0][1], top[0][2], top)

    def _as_list(self, images) -> tuple[list, bool]:
        """A list of per-image items (sources or preprocessed [3,H,W] arrays), and whether one image was given."""
        if _is_tensor(images):
            images = images.detach().cpu().numpy()
        if isinstance(images, np.ndarray) and images.dtype != np.uint8:
            if images.ndim == 4:
                return list(images), False
            if images.ndim == 3:
                return [images], True
            raise InputError(f"preprocessed input must be [N, 3, H, W] or [3, H, W], got shape {images.shape}")
        if isinstance(images, (list, tuple)):
            if not images:
                raise InputError("predict() got an empty list")
            return [i.detach().cpu().numpy() if _is_tensor(i) else i for i in images], False
        return [images], True

    def _run(self, items: list) -> np.ndarray:
        outputs = []
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start : start + self.max_batch_size]
            outputs.append(self.backend.run(self._preprocess(chunk, start)))
        return np.concatenate(outputs)

    def _preprocess(self, chunk: list, offset: int) -> np.ndarray:
        size = self.preprocess.config.input_size
        batch = np.empty((len(chunk), 3, size, size), dtype=np.float32)
        for i, item in enumerate(chunk):
            label = f"#{offset + i}" + (f" ({item})" if isinstance(item, (str, Path)) else "")
            if isinstance(item, np.ndarray) and item.dtype != np.uint8:
                if item.shape != (3, size, size):
                    raise InputError(f"image {label}: preprocessed arrays must be [3, {size}, {size}], got {item.shape}")
                batch[i] = item
            else:
                batch[i] = self.preprocess(item, name=label)
        return batch

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def label_names(labels: str | list[str]) -> list[str]:
    """A manifest's ``labels`` as one name per class."""
    return imagenet_labels() if labels == IMAGENET_LABELS else list(labels)


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")
