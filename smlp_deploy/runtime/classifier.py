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
from ..export import manifest as mf
from ..fileio import sha256_file
from ..models import PreprocessConfig, imagenet_labels
from .backends import Backend, OnnxRuntimeBackend, TorchBackend
from .preprocess import ImageSource, Preprocessor

BACKEND_BY_SUFFIX = {".plan": "tensorrt", ".engine": "tensorrt", ".onnx": "onnxruntime", ".pt": "torch", ".pth": "torch"}


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
        if not self.path.is_file():
            raise ArtifactError(f"artifact {str(self.path)!r} does not exist")
        kind = backend or BACKEND_BY_SUFFIX.get(self.path.suffix.lower())
        if kind not in ("tensorrt", "onnxruntime", "torch"):
            raise InputError(
                f"cannot tell the backend for {str(self.path)!r}: use a .plan/.engine, .onnx or .pt/.pth file, or "
                "pass backend='tensorrt' | 'onnxruntime' | 'torch'"
            )
        self.manifest = self._read_manifest()
        self.preprocess = Preprocessor(PreprocessConfig.from_dict(self.manifest["preprocess"]))
        labels = self.manifest.get("labels", "imagenet-1k")
        self.labels = imagenet_labels() if labels == "imagenet-1k" else list(labels)
        self.backend = self._load_backend(kind, device, threads)
        limits = [b for b in (self.backend.max_batch_size, max_batch_size) if b]
        self.max_batch_size = min(limits) if limits else 32

    def _read_manifest(self) -> dict[str, Any]:
        found = mf.manifest_beside(self.path)
        if found is None:
            warnings.warn(
                f"no {mf.MANIFEST_NAME} beside {self.path}: assuming ImageNet preprocessing at 224 and ImageNet labels",
                stacklevel=3,
            )
            return {"preprocess": PreprocessConfig().to_dict(), "labels": "imagenet-1k", "model": {}, "artifacts": []}
        manifest = mf.read_manifest(found)
        entry = mf.artifact_entry(manifest, self.path)
        if entry and entry.get("sha256") and sha256_file(self.path) != entry["sha256"]:
            raise ArtifactError(
                f"{self.path} does not match the sha256 recorded in {found}: the file changed after it was verified; "
                "re-export it"
            )
        return manifest

    def _load_backend(self, kind: str, device: str | None, threads: int | None) -> Backend:
        if kind != "torch":
            return load_backend(kind, self.path, device=device, threads=threads)
        from ..models import create_model
        from ..models.checkpoint import infer_model_args

        info = self.manifest.get("model") or {}
        args = ({"name": info["name"], "num_classes": info["num_classes"], "image_size": info["image_size"]}
                if info.get("name") else infer_model_args(self.path))
        if not info.get("name"):  # no manifest: the checkpoint tells the resolution and the class count
            self.preprocess = Preprocessor(PreprocessConfig.for_image_size(args["image_size"]))
            if args["num_classes"] != len(self.labels):
                self.labels = [str(i) for i in range(args["num_classes"])]
        return TorchBackend(create_model(**args, checkpoint=self.path), device=device)

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


def load_backend(kind: str, path: Path, *, device: str | None = None, threads: int | None = None) -> Backend:
    """The backend that runs an exported file: ``kind`` is "tensorrt" (an engine) or "onnxruntime"."""
    if kind == "tensorrt":
        from .backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, device=device)
    return OnnxRuntimeBackend(path, device=device, threads=threads)


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")
