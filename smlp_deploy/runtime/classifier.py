"""Classifier: an artifact's backend composed with its preprocessing and labels.

``Classifier('engine.fp16.plan').predict(image)`` -> ``Prediction``. The manifest beside the artifact gives
the preprocessing, labels and model, and says which files the export verified; without one, ImageNet
defaults at the artifact's own input size are used, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np
from PIL import Image

from ..artifacts import kind_of
from ..errors import Arg, ArtifactError, ImageError, InputError, ScoreError
from ..export_folder import ExportFolder
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

    A file beside a manifest that the manifest does not list (left from an earlier export, say) was not
    verified with it and is refused unless ``allow_unlisted``; a listed file must still match its sha256.
    ``cuda_graphs`` replays a TensorRT engine from a CUDA graph per batch size (for a few fixed batch sizes).
    ``precision`` is the precision a backend that offers several computes in: OpenVINO runs the ONNX files in
    ``"fp32"`` (the default) or ``"bf16"`` (where the CPU has it); a precision whose parity the export did not
    record (``smlp-export --openvino``) is warned about. ``jpeg_draft`` decodes large JPEGs given as paths or bytes
    at a reduced scale: faster, at pixels slightly off a full decode (see :class:`Preprocessor`).

    Thread safety: one Classifier may be shared by threads; ONNX Runtime sessions and eager PyTorch are
    thread-safe, and the TensorRT and OpenVINO backends keep one execution context or request per thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        backend: str | None = None,
        device: str | None = None,
        max_batch_size: int | None = None,
        threads: int | None = None,
        allow_unlisted: bool = False,
        cuda_graphs: bool = False,
        precision: str | None = None,
        jpeg_draft: bool = False,
    ):
        self.path = Path(path)
        self.jpeg_draft = jpeg_draft
        check_artifact_path(self.path)
        folder = ExportFolder.beside(self.path)
        self.manifest = folder.manifest if folder else None
        if folder is not None:
            self._check_recorded(folder, allow_unlisted)
            if folder.manifest.model.checkpoint is None:
                warnings.warn(f"{self.path} was exported without a checkpoint: its predictions come from random "
                              f"weights (seed {folder.manifest.model.seed}); export it from trained weights",
                              stacklevel=2)
        self.backend: Backend = load_backend(self.path, backend, device=device, threads=threads,
                                             model_info=self.manifest.model if self.manifest else None,
                                             cuda_graphs=cuda_graphs, precision=precision)
        try:
            self._compose(max_batch_size)
        except BaseException:
            self.backend.close()  # a backend may hold a GPU's memory or a thread pool: nothing is left open
            raise

    def _compose(self, max_batch_size: int | None) -> None:
        """Preprocessing, labels and batch limit around the loaded backend."""
        if self.manifest is not None:
            self._check_compute_precision(self.manifest)
            config, labels = self.manifest.preprocess, label_names(self.manifest.labels)
        else:
            config, labels = self._defaults()
        if self.backend.num_classes and len(labels) != self.backend.num_classes:
            raise ArtifactError(f"{self.path} has {self.backend.num_classes} outputs but its manifest lists "
                                f"{len(labels)} labels: re-export it")
        self.preprocess = Preprocessor(config, jpeg_draft=self.jpeg_draft)
        self.labels = labels
        limits = [b for b in (self.backend.max_batch_size, max_batch_size) if b]
        self.max_batch_size = min(limits) if limits else DEFAULT_MAX_BATCH

    def _check_recorded(self, folder: ExportFolder, allow_unlisted: bool) -> None:
        if folder.manifest.artifact(self.path.name) is not None:
            folder.artifact_path(self.path.name)
            return
        source = folder.manifest.model.checkpoint
        if source is not None and sha256_file(self.path) == source.sha256:
            return  # the checkpoint the export was made from
        listed = folder.listed()
        if not allow_unlisted:
            raise ArtifactError(
                f"{self.path.name} is not part of the export in {self.path.parent}: its {MANIFEST_NAME} lists "
                f"{listed}, so this file was not verified with it (left from an earlier export?). Re-export, or "
                "pass ", Arg("allow_unlisted"), " to load it anyway", parameter="allow_unlisted",
            )
        warnings.warn(f"{self.path} is not listed in its {MANIFEST_NAME} (which lists {listed}): loading it "
                      "unverified, with that manifest's preprocessing and labels", stacklevel=3)

    def _check_compute_precision(self, manifest: Manifest) -> None:
        """A backend computing in a precision of its own choosing (OpenVINO bf16) is said so unless the export
        recorded its parity in that precision."""
        computes, artifact = self.backend.compute_precision, manifest.artifact(self.path.name)
        unmeasured = artifact.unmeasured_on(self.backend.name, computes) if computes and artifact else None
        if unmeasured:
            warnings.warn(f"{self.path.name} runs on {self.backend.name} as {self.runs_in}, {unmeasured}", stacklevel=4)

    def _defaults(self) -> tuple[PreprocessConfig, list[str]]:
        """Without a manifest: ImageNet preprocessing at the input size the artifact declares, ImageNet labels
        for 1000 outputs and class numbers otherwise."""
        size = self.backend.input_shape[-1] or PreprocessConfig().input_size
        classes = self.backend.num_classes or 1000
        labels = imagenet_labels() if classes == 1000 else [str(i) for i in range(classes)]
        warnings.warn(
            f"no {MANIFEST_NAME} beside {self.path}: assuming ImageNet preprocessing at {size}x{size}"
            + (" and ImageNet labels" if classes == 1000 else f" and {classes} unnamed classes"),
            stacklevel=4,
        )
        return PreprocessConfig.for_image_size(size), labels

    def describe(self) -> str:
        return self.backend.describe()

    @property
    def precision(self) -> str:
        """The artifact's precision (as its manifest records it)."""
        entry = self.manifest.artifact(self.path.name) if self.manifest else None
        kind = kind_of(self.path)
        return entry.precision if entry else kind.precision if kind else "fp32"

    @property
    def runs_in(self) -> str:
        """What the arithmetic is in: the artifact's precision, and the backend's where it chooses one."""
        computes = self.backend.compute_precision
        if computes is None or computes == self.precision:
            return self.precision
        if self.precision == "int8":
            return f"int8, float parts {computes}"
        return f"{self.precision} computed in {computes}"

    def __repr__(self) -> str:
        imagenet = (self.manifest is None and len(self.labels) == 1000) or (
            self.manifest is not None and self.manifest.labels == IMAGENET_LABELS)
        labels = "ImageNet" if imagenet else ", ".join(self.labels[:3]) + (", ..." if len(self.labels) > 3 else "")
        return (f"Classifier({str(self.path)!r}: backend {self.backend.name}, device {self.backend.device}, "
                f"{self.runs_in}, max batch {self.max_batch_size}, {len(self.labels)} labels ({labels}))")

    def logits(self, images: ImageSource | Sequence[ImageSource] | np.ndarray) -> np.ndarray:
        """Raw logits [N, classes] for one image, a list, or a preprocessed batch [N, 3, H, W]."""
        items, _ = _as_items(images)
        return self._run(items)

    @overload
    def predict(self, images: list[Any] | tuple[Any, ...], topk: int = 5) -> list[Prediction]: ...

    @overload
    def predict(self, images: str | Path | bytes | bytearray | memoryview | BinaryIO | Image.Image,
                topk: int = 5) -> Prediction: ...

    @overload
    def predict(self, images: Any, topk: int = 5) -> Prediction | list[Prediction]: ...  # arrays: by their shape

    def predict(self, images: Any, topk: int = 5) -> Prediction | list[Prediction]:
        """Top-``topk`` predictions: one ``Prediction`` for one image, a list (in order) for a list or a batch."""
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise InputError(f"topk must be a positive integer, got {topk!r}", parameter="topk")
        items, single = _as_items(images)
        predictions = [self._prediction(row, int(topk)) for row in self._run(items)]
        return predictions[0] if single else predictions

    def predict_each(self, images: Sequence[Any], topk: int = 5,
                     errors: tuple[type[InputError | ScoreError], ...] = (ImageError, ScoreError),
                     ) -> list[Prediction | InputError | ScoreError]:
        """Each image's prediction, or the error (of ``errors``) that stopped it, in order: one bad image does not
        cost the others theirs. All in one call; only where that fails (rare), each image alone."""
        try:
            return list(self.predict(list(images), topk=topk))
        except errors:
            return [self._attempt(image, topk, errors) for image in images]

    def _attempt(self, image: Any, topk: int,
                 errors: tuple[type[InputError | ScoreError], ...]) -> Prediction | InputError | ScoreError:
        try:
            prediction: Prediction = self.predict(image, topk=topk)  # one image: one Prediction
        except errors as exc:
            return exc
        return prediction

    def _prediction(self, logits: np.ndarray, topk: int) -> Prediction:
        shifted = np.exp(logits - logits.max())
        probs = shifted / shifted.sum()
        order = np.argsort(-probs)[:topk]
        top = [(int(i), self.labels[i], float(probs[i])) for i in order]
        return Prediction(top[0][0], top[0][1], top[0][2], top)

    def _run(self, items: list[_Item]) -> np.ndarray:
        outputs = []
        for start in range(0, len(items), self.max_batch_size):
            chunk = items[start : start + self.max_batch_size]
            outputs.append(self._checked(self.backend.run(self._preprocess(chunk)), chunk))
        return np.concatenate(outputs)

    def _checked(self, logits: np.ndarray, chunk: list[_Item]) -> np.ndarray:
        """``logits``, unless a row holds NaN or inf: softmax and top-k would turn that into a ranking that looks
        like any other, so the input is named instead (its row in smlp-predict and on Ray)."""
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if bad.size == 0:
            return logits
        what = ", ".join(f"image {chunk[i].name}" if chunk[i].name else "the image" for i in bad[:5])
        count = int((~np.isfinite(logits[bad])).sum())
        raise ScoreError(f"{self.path.name} returned non-finite scores (NaN or inf) for {what}"
                         + (f" and {bad.size - 5} more" if bad.size > 5 else "")
                         + f": {count} of {logits[bad].size} logits. It passed its export's verification, so these "
                         "inputs drive its arithmetic out of range (an FP16 artifact overflows past 65504): compare "
                         "them with the FP32 model.onnx of the export")

    def _preprocess(self, chunk: list[_Item]) -> np.ndarray:
        size = self.preprocess.config.input_size
        batch = np.empty((len(chunk), 3, size, size), dtype=np.float32)
        for i, item in enumerate(chunk):
            if isinstance(item.value, np.ndarray) and item.value.dtype.kind == "f":
                what = f"image {item.name}" if item.name else "the image"
                if item.value.shape != (3, size, size):
                    raise InputError(f"{what}: preprocessed arrays must be [3, {size}, {size}], got "
                                     f"{list(item.value.shape)}")
                if not np.isfinite(item.value).all():
                    raise InputError(f"{what}: the preprocessed array holds NaN or infinite values")
                batch[i] = item.value
            else:
                batch[i] = self.preprocess(item.value, name=item.name)
        return batch

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Item:
    value: Any  # an image source, or a preprocessed float array [3, H, W]
    name: str | None  # how errors refer to it: "#3", "#3 (cat.jpg)", "cat.jpg"; None: by its type


def _as_items(images: Any) -> tuple[list[_Item], bool]:
    """The per-image items of what a caller passed, and whether it was one image rather than a list or batch."""
    images = _as_numpy(images)
    if isinstance(images, np.ndarray) and images.dtype.kind == "f":
        if images.ndim == 4 and len(images):
            return [_Item(x, f"#{i}") for i, x in enumerate(images)], False
        if images.ndim == 3:
            return [_Item(images, None)], True
        raise InputError(f"a preprocessed batch must be float [N, 3, H, W] with N >= 1, or one [3, H, W] image; got "
                         f"shape {list(images.shape)}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("got an empty list of images")
        return [_Item(_as_numpy(x), _name(f"#{i}", x)) for i, x in enumerate(images)], False
    return [_Item(images, str(images) if isinstance(images, (str, Path)) else None)], True


def _name(base: str, value: Any) -> str:
    return f"{base} ({value})" if isinstance(value, (str, Path)) else base


def _as_numpy(value: Any) -> Any:
    """torch tensors as NumPy arrays (without importing torch); anything else as it is."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def label_names(labels: str | list[str]) -> list[str]:
    """A manifest's ``labels`` as one name per class."""
    return imagenet_labels() if labels == IMAGENET_LABELS else list(labels)
