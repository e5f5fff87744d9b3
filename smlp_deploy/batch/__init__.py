"""Batch inference on Ray Data: image folders or lists -> decode + preprocess tasks -> an actor pool holding one
Classifier each -> Parquet or JSON lines, resumable. Needs the ``ray`` extra (``pip install 'smlp-deploy[ray]'``)."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .pipeline import BatchSummary, ReplicaPlan, plan_replicas, predict_dataset
