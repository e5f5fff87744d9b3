"""The two steps Ray runs on every batch: decode + preprocess (a task), then classify (an actor holding one model).

Both are plain module-level callables without a Ray import: Ray pickles them by reference, so workers import
this module from the installed package. Batches arrive as ``{"path": ndarray[object]}`` dicts of NumPy arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImageError, ScoreError, SmlpDeployError
from ..preprocess_config import PreprocessConfig

if TYPE_CHECKING:
    import pyarrow as pa

    from ..runtime.classifier import Prediction

# Result columns, in both output formats: what smlp-predict --json reports, one list per top-k field.
RESULT_COLUMNS = ("path", "topk", "labels", "scores", "error")


def result_schema() -> pa.Schema:
    """The Arrow schema of result rows. Explicit, because a batch without errors would otherwise type its
    all-null ``error`` column as ``null`` and clash with batches that have one."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("topk", pa.list_(pa.int64())), ("labels", pa.list_(pa.string())),
                      ("scores", pa.list_(pa.float64())), ("error", pa.string())])


def preprocess_images(batch: dict[str, np.ndarray], config: PreprocessConfig, *,
                      jpeg_draft: bool = False) -> dict[str, np.ndarray]:
    """Decode and preprocess each path with the runtime's own ``Preprocessor``; never raises for one image.

    An image that cannot be read gets a zero array and its error message (the one ``smlp-predict`` prints) in
    ``error``, so one bad file never fails the job.
    """
    from ..runtime.preprocess import Preprocessor

    preprocess = Preprocessor(config, jpeg_draft=jpeg_draft)
    paths = [str(p) for p in batch["path"]]
    images = np.zeros((len(paths), 3, config.input_size, config.input_size), dtype=np.float32)
    errors = np.full(len(paths), "", dtype=object)
    for i, path in enumerate(paths):
        try:
            images[i] = preprocess(path, name=path)
        except ImageError as exc:
            errors[i] = str(exc)
        except Exception as exc:  # any type: Pillow's decoders raise assorted types on malformed files
            errors[i] = f"image {path}: cannot be decoded ({type(exc).__name__}: {exc})"
    return {"path": np.array(paths, dtype=object), "image": images, "error": errors}


class ClassifierReplica:
    """One model replica: Ray Data builds one per actor and feeds it preprocessed batches."""

    def __init__(self, artifact: str, topk: int, classifier_options: dict[str, Any]):
        from ..runtime.classifier import Classifier

        self.classifier = Classifier(artifact, **classifier_options)
        self.topk = topk

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import pyarrow as pa

        errors = [str(e) or None for e in batch["error"]]
        good = [i for i, e in enumerate(errors) if e is None]
        predictions = self._predict(batch, good, errors)
        tops = [predictions[i].topk if i in predictions else [] for i in range(len(errors))]
        return pa.Table.from_pydict({
            "path": [str(p) for p in batch["path"]],
            "topk": [[index for index, _, _ in top] for top in tops],
            "labels": [[label for _, label, _ in top] for top in tops],
            "scores": [[score for _, _, score in top] for top in tops],
            "error": errors,
        }, schema=result_schema())


    def _predict(self, batch: dict[str, np.ndarray], good: list[int],
                 errors: list[str | None]) -> dict[int, Prediction]:
        """The predictions of the rows in ``good``; a row whose scores are not finite gets its error instead (found
        one by one: rare)."""
        if not good:
            return {}
        found: dict[int, Prediction] = {}
        results = self.classifier.predict_each([batch["image"][i] for i in good], topk=self.topk, errors=(ScoreError,))
        for i, result in zip(good, results, strict=True):
            if isinstance(result, SmlpDeployError):
                errors[i] = f"image {batch['path'][i]}: {result}"
            else:
                found[i] = result
        return found


@dataclass(frozen=True)
class ReplicaInfo:
    """What loading the model once where a replica runs tells the driver."""

    description: str  # the backend, as Classifier.describe() says
    preprocess: PreprocessConfig
    warnings: list[str]  # what loading it warned (random weights, an unlisted file), for the caller to see


def describe_replica(artifact: str, classifier_options: dict[str, Any]) -> ReplicaInfo:
    """Load the model once where a replica would run. A bad artifact or a missing backend then fails with the
    toolkit's own error before any actor starts (an actor's failure reaches the driver as text only), and its
    warnings reach the caller (a worker's own output does not)."""
    from ..runtime.classifier import Classifier

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Classifier(artifact, **classifier_options) as classifier:
            description, config = classifier.describe(), classifier.preprocess.config
    return ReplicaInfo(description, config, list(dict.fromkeys(str(w.message) for w in caught)))


def drop_done(batch: dict[str, np.ndarray], done: frozenset[str]) -> dict[str, np.ndarray]:
    """The rows of a batch whose path the output does not hold yet."""
    keep = [str(p) not in done for p in batch["path"]]
    return {"path": batch["path"][keep]}
