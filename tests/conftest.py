from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from smlp_deploy.manifest import BatchProfile
from smlp_deploy.models import PreprocessConfig
from smlp_deploy.runtime import Preprocessor
from smlp_deploy.samples import sample_images

from .reliability import snapshot

# Python's words in what a command prints: keyword arguments (name=value, =True), module paths.
PYTHON_WORDS = re.compile(r"=True\b|=False\b|=None\b|\b[a-z_][a-z0-9_]*=(?!=)|\bsmlp_deploy\.")
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
CALIB = sample_images()[0].parent  # the bundled photos, as calibration images
# The engines of the every-precision exports: a profile of their own (not the default 1:8:32), so that what reads
# it back (Triton's max_batch_size, preferred batch sizes) is seen to read it.
ENGINE_PROFILE = BatchProfile(1, 4, 16)


@contextlib.contextmanager
def ray_environment() -> Iterator[Path]:
    """Environment for every Ray started inside, set before Ray is first imported: 127.0.0.1 only, no auth token
    written to ~/.ray, no usage stats, session files in a temporary folder of their own (yielded), removed after.

    Ray's Unix sockets live at <root>/ray/session_<date>_<pid>/sockets/plasma_store (66 characters after root), and
    a socket path has at most 107 bytes: pytest's own folders are too deep under xdist (popen-gw1/...), so the root
    is a short one in the system's temporary folder."""
    with tempfile.TemporaryDirectory(prefix="ray", ignore_cleanup_errors=True) as short, \
            pytest.MonkeyPatch.context() as env:
        root = Path(short)
        assert len(str(root)) + 66 <= 107, f"{root} is too long for Ray's Unix socket paths (107 bytes)"
        for name, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                            "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(root)}.items():
            env.setenv(name, value)
        yield root


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Real photographs shipped with the package."""
    return sample_images()


# Exports shared by the session: each is made once (once per xdist worker that needs it) and the tests that take
# one only read it; a test that changes an export works on a copy (shutil.copytree). Measured on the 2-core
# machine: a test-variant export at 64x64 takes 3 s, one in every precision 5 s, the tiny variant's 28 s.


@pytest.fixture(scope="session")
def random_export(tmp_path_factory) -> Path:
    """The test variant at 64x64, FP32, with the engines of the flavours that build here; random weights of seed 3,
    not the default 0, so that a message naming the seed is seen to read it from the manifest."""
    from smlp_deploy.export import export_model

    out = tmp_path_factory.mktemp("random") / "export"
    export_model("test", image_size=64, seed=3, out_dir=out, quiet=True)
    yield from read_only(out, out)


class CheckpointExport(NamedTuple):
    weights: Path
    export: Path


@pytest.fixture(scope="session")
def checkpoint_export(tmp_path_factory) -> CheckpointExport:
    """A checkpoint as torch.save writes it (the test variant at 64x64, 1000 classes) and its FP32 export."""
    import torch

    from smlp_deploy.export import export_model
    from smlp_deploy.models import create_model

    root = tmp_path_factory.mktemp("checkpoint")
    torch.save(create_model("test", image_size=64).state_dict(), root / "weights.pth")
    export_model("test", checkpoint=root / "weights.pth", image_size=64, out_dir=root / "export", quiet=True)
    yield from read_only(root, CheckpointExport(root / "weights.pth", root / "export"), root / "export")


@pytest.fixture(scope="session")
def fp16_export(tmp_path_factory):
    """The test variant at 64x64 in FP32 and FP16, random weights, with the engines of every flavour that builds
    here for batches of 1 to 8 (tuned for 4)."""
    from smlp_deploy.export import BuildOptions, export_model

    out = tmp_path_factory.mktemp("fp16") / "export"
    result = export_model("test", image_size=64, precisions=("fp32", "fp16"), out_dir=out, quiet=True,
                          build=BuildOptions(BatchProfile(1, 4, 8), workspace_mib=1024))
    yield from read_only(out, result)


def read_only(folder: Path, value, *more: Path):
    """Gives ``value`` to the tests, then fails the teardown if any of them changed a file in ``folder`` (or
    ``more``): a test that changes a shared export must change a copy."""
    folders = (folder, *more)
    before = [snapshot(f) for f in folders]
    yield value
    changed = [str(f) for f, was in zip(folders, before, strict=True) if snapshot(f) != was]
    assert not changed, f"a test changed the shared {', '.join(changed)}: copy it first (shutil.copytree)"


def every_precision(variant: str, image_size: int, out: Path, int8_targets: tuple[str, ...]):
    """FP32, FP16, INT8 and FP8 (calibrated with minmax on the bundled photos), with the default flavours: TensorRT
    for RTX builds its engines here (for ENGINE_PROFILE), TensorRT is skipped where it cannot build."""
    from smlp_deploy.export import BuildOptions, Fp8Options, Int8Options, export_model

    samples = len(sample_images())
    return export_model(variant, image_size=image_size, precisions=("fp32", "fp16", "int8", "fp8"), out_dir=out,
                        quiet=True, build=BuildOptions(ENGINE_PROFILE),
                        int8_options=Int8Options(CALIB, samples=samples, method="minmax", targets=int8_targets),
                        fp8_options=Fp8Options(CALIB, samples=samples))


@pytest.fixture(scope="session")
def every_precision_64(tmp_path_factory):
    """The test variant at 64x64 in every precision, with both INT8 forms (TensorRT's and the CPU one)."""
    result = every_precision("test", 64, tmp_path_factory.mktemp("every-test") / "export", ("tensorrt", "cpu"))
    yield from read_only(result.out_dir, result)


@pytest.fixture(scope="session")
def every_precision_tiny(tmp_path_factory):
    """The README's main job, sMLPNet-T at 224x224, in every precision: the costliest export of the suite (28 s),
    so its tests share one xdist group ("tiny")."""
    result = every_precision("tiny", 224, tmp_path_factory.mktemp("every-tiny") / "export", ("tensorrt",))
    yield from read_only(result.out_dir, result)


def photo_batch(image_size: int) -> np.ndarray:
    """The bundled photographs through the real preprocessing, at ``image_size``."""
    return Preprocessor(PreprocessConfig.for_image_size(image_size)).batch(sample_images())


def assert_steps_counted(progress: str) -> None:
    """Progress lines count ``[1/n]`` to ``[n/n]``: the total is the number of steps that ran."""
    counters = [(int(i), int(n)) for i, n in re.findall(r"^\[(\d+)/(\d+)\]", progress, re.M)]
    assert counters and counters == [(i, len(counters)) for i in range(1, len(counters) + 1)], counters


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    skip_without_gpu(items)
    group_by_module(items)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's worker has marked each test's group in its node id
def pytest_collection_finish(session):
    """A worker of ``--dist loadgroup`` whose tests carry no group spreads every module over the workers, each
    making its exports again, without a word (pytest-dev/pytest-xdist#1386): stop instead."""
    if getattr(session.config.option, "loadgroup", False):  # set in the workers of --dist loadgroup only
        ungrouped = [item.nodeid for item in session.items if "@" not in item.nodeid.rpartition("]")[2]]
        if ungrouped:
            raise pytest.UsageError(f"--dist loadgroup is not grouping tests here (pytest {pytest.__version__}; "
                                    f"{ungrouped[0]} has no group): see pyproject.toml's pin of pytest")


def group_by_module(items) -> None:
    """For ``pytest -n 2 --dist loadgroup`` (make test): a test without an ``xdist_group`` mark joins its module's
    group, so a module runs on one worker and its module-scoped fixtures are made once; a mark groups tests across
    modules instead (the tiny export's readers: "tiny") or splits a module (test_tensorrt_support's graphs)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__.rpartition(".")[2]))


def skip_without_gpu(items) -> None:
    """Tests marked ``tensorrt`` (its argument names the flavour: ``tensorrt``, the default, or ``tensorrt-rtx``)
    or ``cuda`` run unchanged on a GPU host and are skipped, with why, elsewhere."""
    import torch

    from smlp_deploy.tensorrt.flavours import FLAVOURS

    cuda = None if torch.cuda.is_available() else "no CUDA GPU"
    for item in items:
        marker = item.get_closest_marker("tensorrt")
        flavour = FLAVOURS[marker.args[0] if marker.args else "tensorrt"] if marker else None
        reason = flavour.run_unavailable() if flavour else cuda if item.get_closest_marker("cuda") else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"needs {flavour.title if flavour else 'cuda'}: {reason}"))
