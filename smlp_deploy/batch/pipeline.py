"""predict_dataset: classify a large image set on Ray Data, one model replica per actor, results streamed to disk.

paths (driver) -> ``from_items`` -> decode + preprocess (Ray tasks, the runtime's own Preprocessor)
-> classify (actor pool, one Classifier per actor) -> the driver appends each batch to the output as it arrives.

Ray starts for the call and stops after it (also on an error or Ctrl-C), or the call joins an existing cluster
(``address``), or uses the connection the caller already opened with ``ray.init``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Arg, BackendUnavailableError, InputError, SmlpDeployError
from ..preprocess_config import PreprocessConfig
from ..progress import progress_bar
from ..runtime.backends.factory import check_artifact_path
from .inputs import ACCEPTED, image_paths
from .output import ResultSink, open_sink
from .stages import ClassifierReplica, ReplicaInfo, describe_replica, drop_done, preprocess_images

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

RAY_MISSING = "Ray Data is not installed: pip install 'smlp-deploy[ray]' (ray[data], about 500 MB)"


@dataclass(frozen=True)
class BatchSummary:
    """What one predict_dataset call did."""

    output: str
    images: int  # result rows this call wrote, error rows included
    errors: int  # rows without a prediction: an unreadable image, or non-finite scores
    skipped: int  # rows the output already held (resume): their images were not classified again
    seconds: float  # the whole call, Ray's start-up included
    startup_seconds: float  # starting or joining Ray and loading the model once to check it
    replicas: int
    model: str  # the backend, as a replica describes it ("" when nothing was left to classify)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ReplicaPlan:
    """What each model replica and each preprocessing task asks Ray for."""

    replicas: int
    cpus: float
    gpus: float
    preprocess_cpus: float  # equal to ``cpus`` on CPU, so Ray fuses decoding into the replica's own worker
    threads: int | None  # inference threads per replica on CPU; None: the backend's default

    def cpus_needed(self) -> float:
        return self.replicas * self.cpus + (self.preprocess_cpus if self.gpus else 0.0)


def plan_replicas(cluster: dict[str, float], replicas: int, gpus_per_replica: float | None,
                  cpus_per_replica: float | None) -> ReplicaPlan:
    """Resources per replica for a cluster with ``cluster`` (Ray's ``cluster_resources()``).

    A fixed actor pool holds its CPUs for the whole run, and Ray Data waits without a word for a CPU that never
    frees (Ray 2.60, 2 CPUs: 2 replicas at 1 CPU plus one read task). So by default the replicas share all but
    one CPU (half of them on a machine with fewer than 2), at most one CPU each: 2 CPUs, 2 replicas -> 0.5
    each. On CPU the preprocessing asks for the same CPUs, so Ray runs it inside the replica's worker. GPUs:
    one per replica where the cluster has any; preprocessing then runs as separate 1-CPU tasks.
    """
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    gpus_each = (1.0 if gpus else 0.0) if gpus_per_replica is None else float(gpus_per_replica)
    reserve = min(1.0, cpus / 2)
    cpus_each = min(1.0, (cpus - reserve) / replicas) if cpus_per_replica is None else float(cpus_per_replica)
    if gpus_each:
        return ReplicaPlan(replicas, cpus_each, gpus_each, preprocess_cpus=1.0, threads=None)
    return ReplicaPlan(replicas, cpus_each, 0.0, preprocess_cpus=cpus_each, threads=max(1, math.floor(cpus / replicas)))


def predict_dataset(
    images: str | Path | ray.data.Dataset,
    artifact: str | Path,
    *,
    output: str | Path,
    batch_size: int = 32,
    replicas: int = 1,
    gpus_per_replica: float | None = None,
    cpus_per_replica: float | None = None,
    topk: int = 5,
    address: str | None = None,
    resume: bool = False,
    backend: str | None = None,
    precision: str | None = None,
    allow_unlisted: bool = False,
    jpeg_draft: bool = False,
    no_progress_timeout_s: float = 600.0,
    quiet: bool = False,
) -> BatchSummary:
    """Classify ``images`` with ``replicas`` copies of ``artifact`` on Ray Data; rows go to ``output``.

    ``images``: a folder (searched recursively), a text file of image paths (one per line, relative ones
    relative to the file's folder), or a ``ray.data.Dataset`` with a string column ``path``.
    ``output``: ``.jsonl`` (one file) or ``.parquet`` (a folder of part files); each row holds ``path``,
    ``topk`` (class indices), ``labels``, ``scores`` (softmax) and ``error`` (null, or why the image could not
    be read: one bad file never fails the job). ``resume=True`` adds only the images the output lacks.
    ``gpus_per_replica`` defaults to 1 where the cluster has GPUs; ``cpus_per_replica``: see
    :func:`plan_replicas`. ``address``: an existing cluster (``"auto"``, ``"host:6379"``); by default a local
    Ray starts for this call. A run that makes no progress for ``no_progress_timeout_s`` (resources that can
    never be granted, say) ends with an error instead of waiting. Progress is drawn on stderr on a terminal.
    ``backend`` and ``precision`` open the artifact in each replica as :class:`~smlp_deploy.Classifier` does
    (``backend="openvino", precision="bf16"`` on CPU replicas); ``jpeg_draft`` decodes large JPEGs at a reduced
    scale, as it does (faster, at pixels slightly off a full decode).
    """
    started = time.perf_counter()
    _check_arguments(batch_size=batch_size, replicas=replicas, gpus_per_replica=gpus_per_replica,
                     cpus_per_replica=cpus_per_replica, topk=topk, no_progress_timeout_s=no_progress_timeout_s)
    check_artifact_path(Path(artifact))
    artifact = str(Path(artifact).absolute())  # as the workers will open it, wherever they run
    source = image_paths(images) if isinstance(images, (str, Path)) else _as_dataset(images)
    sink = open_sink(output, resume=resume)
    failed = True
    try:
        # The paths left to classify, or the caller's Dataset (whose done paths the pipeline drops).
        todo = [p for p in source if p not in sink.done] if isinstance(source, list) else source
        summary = partial(BatchSummary, output=str(output), skipped=len(sink.done), replicas=replicas)
        if isinstance(todo, list) and not todo:
            failed = False
            return summary(images=0, errors=0, seconds=time.perf_counter() - started, startup_seconds=0.0, model="")
        joining = time.perf_counter()
        with _ray_session(address) as (ray, local):
            plan = plan_replicas(ray.cluster_resources(), replicas, gpus_per_replica, cpus_per_replica)
            if local:
                _check_fits(plan, ray.cluster_resources())
            options = dict(backend=backend, device="cuda" if plan.gpus else "cpu", max_batch_size=batch_size,
                           threads=plan.threads, allow_unlisted=allow_unlisted, precision=precision)
            replica = _check_model(ray, plan, artifact, options)
            startup = time.perf_counter() - joining
            if isinstance(todo, list):
                dataset = ray.data.from_items([{"path": p} for p in todo])
            else:
                dataset = _paths_of(todo, sink.done, plan)
            dataset = _classify(dataset, plan, batch_size=batch_size, config=replica.preprocess, jpeg_draft=jpeg_draft,
                                replica_args=dict(artifact=artifact, topk=topk, classifier_options=options))
            rows, errors = _drain(dataset, sink, total=len(todo) if isinstance(todo, list) else None,
                                  timeout=no_progress_timeout_s, plan=plan, quiet=quiet)
        failed = False
        return summary(images=rows, errors=errors, seconds=time.perf_counter() - started, startup_seconds=startup,
                       model=replica.description)
    finally:
        sink.close(discard_if_empty=failed)


def _check_arguments(**values: Any) -> None:
    def whole(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number >= 1, got {value!r}", parameter=name)

    whole("batch_size", values["batch_size"])
    whole("replicas", values["replicas"])
    whole("topk", values["topk"])
    for name, least in (("gpus_per_replica", 0.0), ("cpus_per_replica", 1e-4), ("no_progress_timeout_s", 1.0)):
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < least):
            raise InputError(f"{name} must be a number >= {least:g}, got {value!r}", parameter=name)


def _import_ray() -> Any:
    """Ray with Ray Data, or the error that names the extra."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise BackendUnavailableError(RAY_MISSING) from None
    return ray


def _as_dataset(images: object) -> ray.data.Dataset:
    _import_ray()
    from ray.data import Dataset

    if not isinstance(images, Dataset):
        raise InputError(f"images is a {type(images).__name__}: pass ", *ACCEPTED, parameter="images")
    return images


@contextmanager
def _ray_session(address: str | None) -> Iterator[tuple[Any, bool]]:
    """Ray, connected; and whether it is a local instance started here (shut down on the way out).

    A connection the caller opened is used as it is and left open. Ray's own logging is left unconfigured
    (``configure_logging=False``), so the caller's logging setup is untouched; its INFO lines stay quiet.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray, False
        return
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, ValueError) as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address!r}: {exc}", parameter="address") from None
    try:
        yield ray, address is None
    finally:
        ray.shutdown(wait_for_processes=address is None)


def _check_fits(plan: ReplicaPlan, cluster: dict[str, float]) -> None:
    """On a local instance, resources that can never be granted are an error now rather than a stall later."""
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if plan.replicas * plan.gpus > gpus:
        raise InputError(Arg("replicas", plan.replicas), " x ", Arg("gpus_per_replica", plan.gpus),
                         f" needs {plan.replicas * plan.gpus:g} GPUs; this machine has {gpus:g}: fewer replicas or "
                         "GPUs per replica", parameter="replicas")
    if plan.cpus_needed() > cpus + 1e-9:
        raise InputError(Arg("replicas", plan.replicas), " x ", Arg("cpus_per_replica", plan.cpus),
                         (f" plus {plan.preprocess_cpus:g} for preprocessing" if plan.gpus else "")
                         + f" needs {plan.cpus_needed():g} CPUs; this machine has {cpus:g}: fewer replicas or CPUs "
                         "per replica", parameter="cpus_per_replica")


def _check_model(ray: Any, plan: ReplicaPlan, artifact: str, options: dict[str, Any]) -> ReplicaInfo:
    """Load the model once with a replica's resources: a bad artifact fails here with its own error, and what
    loading it warned is warned here."""
    task = ray.remote(describe_replica).options(num_cpus=plan.cpus, num_gpus=plan.gpus)
    try:
        replica: ReplicaInfo = ray.get(task.remote(artifact, options))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, SmlpDeployError):
            raise exc.cause from None
        raise
    for message in replica.warnings:
        warnings.warn(message, stacklevel=3)
    return replica


def _paths_of(dataset: ray.data.Dataset, done: set[str], plan: ReplicaPlan) -> ray.data.Dataset:
    """A caller's Dataset reduced to its ``path`` column, without the paths the output already holds."""
    columns = dataset.columns() or []
    if "path" not in columns:
        raise InputError(f"the Dataset has columns {columns}, none named 'path': rename the column of image paths, "
                         "e.g. dataset.rename_columns({'file': 'path'})", parameter="images")
    dataset = dataset.select_columns(["path"])
    if done:
        dataset = dataset.map_batches(partial(drop_done, done=frozenset(done)), batch_format="numpy",
                                      num_cpus=plan.preprocess_cpus)
    return dataset


def _classify(dataset: ray.data.Dataset, plan: ReplicaPlan, *, batch_size: int, config: PreprocessConfig,
              jpeg_draft: bool, replica_args: dict[str, Any]) -> ray.data.Dataset:
    from ray.data import ActorPoolStrategy

    dataset = dataset.map_batches(partial(preprocess_images, config=config, jpeg_draft=jpeg_draft),
                                  batch_size=batch_size,
                                  batch_format="numpy", num_cpus=plan.preprocess_cpus)
    return dataset.map_batches(ClassifierReplica, fn_constructor_kwargs=replica_args, batch_size=batch_size,
                               batch_format="numpy", num_cpus=plan.cpus, num_gpus=plan.gpus,
                               compute=ActorPoolStrategy(size=plan.replicas))


def _drain(dataset: ray.data.Dataset, sink: ResultSink, *, total: int | None, timeout: float, plan: ReplicaPlan,
           quiet: bool) -> tuple[int, int]:
    """Run the pipeline, appending each batch of rows to ``sink`` as it arrives; (rows, error rows)."""
    from ray.data.exceptions import ExecutionTimeoutError

    context = dataset.context
    saved = (context.enable_progress_bars, context.print_on_execution_start, context.execution_no_progress_timeout_s)
    context.enable_progress_bars, context.print_on_execution_start = False, False
    context.execution_no_progress_timeout_s = timeout
    rows = errors = 0
    try:
        with _quiet_ray_data(), progress_bar(total=total, unit="img", quiet=quiet) as bar:
            tables: Iterator[pa.Table] = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
            for table in tables:
                sink.write(table)
                rows += table.num_rows
                errors += table.num_rows - table.column("error").null_count
                bar.update(table.num_rows)
                bar.set_postfix(errors=errors, refresh=False)
    except ExecutionTimeoutError:
        raise SmlpDeployError(
            f"Ray made no progress for {timeout:g} s ({rows} rows written): {plan.replicas} replica(s) asking for "
            f"{plan.cpus:g} CPU and {plan.gpus:g} GPU each may not fit what the cluster has free; lower replicas, "
            "cpus_per_replica or gpus_per_replica, or raise no_progress_timeout_s if one batch takes that long"
        ) from None
    finally:
        (context.enable_progress_bars, context.print_on_execution_start,
         context.execution_no_progress_timeout_s) = saved
    return rows, errors


@contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's logger (its own console handler, INFO) held at ERROR for the call, then restored: the call
    draws its own progress, and the plan and "execution finished" lines would interleave with it."""
    import logging

    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
