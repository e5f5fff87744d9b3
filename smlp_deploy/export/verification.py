"""The inputs every artifact is checked on, and the PyTorch logits they are checked against.

Real photographs through the real preprocessing, plus random tensors that reach parts of the input space
photographs do not. Saved beside the artifacts, so an engine built later on a GPU host is checked against
the same reference without the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EXPORT_MODEL, ArtifactError
from ..fileio import atomic_path
from ..manifest import ParityReport
from ..preprocess_config import PreprocessConfig
from ..runtime.backends.base import Backend
from ..runtime.preprocess import Preprocessor
from ..samples import sample_images
from .parity import check_finite, compare

N_RANDOM = 11


@dataclass
class VerificationSet:
    inputs: np.ndarray  # [N, 3, H, W] float32: the photographs first, then random tensors
    reference: np.ndarray  # [N, classes] float32, PyTorch FP32 logits
    n_photos: int

    def names(self, precision: str) -> list[str]:
        """How messages name the inputs ``precision`` is held to: the photographs by file, the random tensors by
        number."""
        photos = [p.name for p in sample_images()]
        photos = photos if len(photos) == self.n_photos else [f"photo #{i + 1}" for i in range(self.n_photos)]
        count = len(self.for_precision(precision)[0])
        return (photos + [f"random input #{i + 1}" for i in range(len(self.inputs) - self.n_photos)])[:count]

    def parity(self, backend: Backend, precision: str, artifact: str) -> ParityReport:
        """``backend``'s logits on the inputs ``precision`` is held to, against PyTorch's (non-finite logits are a
        :class:`~smlp_deploy.errors.ParityError` naming the inputs)."""
        inputs, reference = self.for_precision(precision)
        return compare(reference, backend.run_all(inputs), artifact=artifact, names=self.names(precision))

    def for_precision(self, precision: str) -> tuple[np.ndarray, np.ndarray]:
        """The inputs and reference logits ``precision`` is held to. INT8 ranges are calibrated on images, and
        random tensors fall outside them by design, so INT8 is held to the photographs only."""
        if precision == "int8":
            return self.inputs[: self.n_photos], self.reference[: self.n_photos]
        return self.inputs, self.reference

    @classmethod
    def create(cls, model: torch.nn.Module, preprocess: PreprocessConfig, n_random: int = N_RANDOM,
               seed: int = 0) -> VerificationSet:
        photos = Preprocessor(preprocess).batch(sample_images())
        size = preprocess.input_size
        noise = np.random.default_rng(seed).standard_normal((n_random, 3, size, size)).astype(np.float32)
        inputs = np.concatenate([photos, noise])
        with torch.inference_mode():
            reference = model.eval()(torch.from_numpy(inputs)).numpy()
        found = cls(inputs, reference, len(photos))
        check_finite(reference, "the PyTorch model", found.names("fp32"))
        return found

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, inputs=self.inputs, reference=self.reference, n_photos=self.n_photos)

    @classmethod
    def load(cls, path: Path) -> VerificationSet:
        with np.load(path) as data:
            if "n_photos" not in data:
                raise ArtifactError(f"{path} was written by an older smlp-deploy (no photo count, which INT8 "
                                    "parity needs): export again with ", EXPORT_MODEL, f" to {path.parent}")
            return cls(data["inputs"], data["reference"], int(data["n_photos"]))
