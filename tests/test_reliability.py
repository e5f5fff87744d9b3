"""Interruptions and faults never cost a working export; one Classifier serves threads and long runs.

The fault helpers live in tests/reliability.py, which also writes docs/reliability.md.
"""

from __future__ import annotations

import shutil
import signal
import subprocess

import numpy as np
import pytest

from smlp_deploy import Classifier
from smlp_deploy.errors import InputError, OutputError
from smlp_deploy.export import build_from_onnx, export_model
from smlp_deploy.export.engines import verify_engines
from smlp_deploy.export_folder import ExportFolder
from smlp_deploy.samples import sample_images
from smlp_deploy.tensorrt.flavours import TENSORRT_RTX

from .reliability import (
    ROOT,
    debris,
    export_command,
    export_with_file_limit,
    foreign_writer,
    interrupt_export,
    memory_growth,
    mounted_faults,
    namespace_unavailable_reason,
    photo_items,
    predict_in_threads,
    race_exports,
    snapshot,
)

CALIB = str(sample_images()[0].parent)
# 12 steps: build, read calibration images, export ONNX, simplify, verify, FP16, verify, calibrate, then quantize
# and verify each INT8 form; the calibration cache is part of the export.
INT8 = ("--fp16", "--int8", "--int8-target", "both", "--calib-dir", CALIB)


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """An earlier INT8 export that every fault below must leave exactly as it is."""
    out = tmp_path_factory.mktemp("reliability") / "export"
    subprocess.run(export_command(out, *INT8, "--quiet"), check=True, capture_output=True, cwd=ROOT)
    return out, snapshot(out)


def assert_intact(previous) -> None:
    out, before = previous
    assert snapshot(out) == before
    assert Classifier(out / "model.int8.onnx").predict(str(sample_images()[0])).label


@pytest.mark.parametrize("at_step, sig", [
    (3, signal.SIGKILL),  # the ONNX export is being written
    (8, signal.SIGINT),  # calibrating: the calibration cache is being replaced
    (9, signal.SIGKILL),  # quantizing the TensorRT form
    (12, signal.SIGINT),  # verifying the last artifact
])
def test_an_interrupted_export_leaves_the_previous_one(previous, at_step, sig):
    outcome = interrupt_export(previous[0], (*INT8, "--seed", "5"), at_step, sig)
    assert_intact(previous)
    if sig == signal.SIGINT:
        assert outcome.returncode == 130 and "interrupted" in outcome.stderr
        assert not debris(previous[0])  # cleaned up on the way out
    else:
        assert outcome.returncode == -signal.SIGKILL


def test_a_full_disk_leaves_the_previous_export(previous):
    outcome = export_with_file_limit(previous[0], ("--seed", "6"), limit_bytes=300_000)
    assert outcome.returncode == 2
    assert f"error: --out: the export to {previous[0]} stopped: File too large" in outcome.stderr
    assert "was left as it was" in outcome.stderr
    assert_intact(previous)


def test_a_completed_export_replaces_the_folder_whole(previous, tmp_path):
    """After interrupted runs, a completed one sweeps their debris and leaves no stale file (the INT8 model of
    the earlier export is gone with an FP32-only re-export)."""
    out = tmp_path / "export"
    subprocess.run(export_command(out, *INT8, "--quiet"), check=True, capture_output=True, cwd=ROOT)
    interrupt_export(out, ("--seed", "7"), 2, signal.SIGKILL)
    assert debris(out)
    done = subprocess.run(export_command(out, "--seed", "7", "--quiet"), capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr
    engines = ["engine.fp32.rtx.plan"] if TENSORRT_RTX.build_unavailable() is None else []
    assert sorted(snapshot(out)) == [*engines, "manifest.json", "model.onnx", "verification.npz"] and not debris(out)


def test_an_interrupted_first_export_leaves_nothing(tmp_path):
    out = tmp_path / "new"
    # Step 2 (the ONNX export, some 4 s here) is the export's longest: once step 3 is announced the rest takes about
    # 1 s, which a loaded CI machine's reader can miss, and the export then ends before the signal (CI, stop 34).
    outcome = interrupt_export(out, (), 2, signal.SIGINT)
    assert outcome.returncode == 130 and not out.exists() and not debris(out)


def test_an_export_never_replaces_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds files that are not part of an export \(notes\.txt\)"):
        export_model("test", image_size=64, out_dir=tmp_path, quiet=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_two_exports_into_one_folder_one_writes_it_the_other_is_refused(tmp_path):
    """Two smlp-export runs into one folder, started together (the first to start its steps is paused in them, so
    they surely overlap): the first writes its export whole, the other is refused at once, naming the first."""
    out = tmp_path / "export"
    seeds = (1, 2)
    race = race_exports(out, tuple(("--flavour", "none", "--seed", str(seed)) for seed in seeds))
    first, other = race.outcomes[race.first], race.outcomes[1 - race.first]
    assert first.returncode == 0, first.stderr
    assert other.returncode == 2, other.stderr
    assert f"error: --out: another process is writing {out} (pid {race.pids[race.first]} on host " in other.stderr
    folder = ExportFolder.open(out)
    assert folder.manifest.model.seed == seeds[race.first]
    assert all(folder.artifact_path(a.path).is_file() for a in folder.manifest.artifacts)  # each sha256 checked
    assert sorted(snapshot(out)) == ["manifest.json", "model.onnx", "verification.npz"] and not debris(out)


def test_a_staging_folder_is_removed_only_once_its_writer_let_go(tmp_path):
    out = tmp_path / "export"
    stage = tmp_path / ".export.staging-999999999-c0ffee"  # above any pid_max: to a process id check, a dead writer
    stage.mkdir()
    (stage / "model.onnx").write_bytes(b"being written")
    with foreign_writer(out) as writer:
        with pytest.raises(OutputError, match=f"another process is writing {out}: wait until it has finished"):
            export_model("test", image_size=64, out_dir=out, flavours=(), quiet=True)
        assert (stage / "model.onnx").read_bytes() == b"being written" and not out.exists()
        writer.kill()
        writer.wait()
    export_model("test", image_size=64, out_dir=out, flavours=(), quiet=True)  # its writer died: debris now
    assert not stage.exists() and not debris(out)


def test_the_engines_of_a_folder_being_written_are_refused(random_export, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(random_export, copy)
    with foreign_writer(copy):
        for run, parameter in ((build_from_onnx, "directory"), (verify_engines, "export_dir")):
            with pytest.raises(OutputError, match="another process is writing") as refused:
                run(copy, quiet=True)
            assert refused.value.parameter == parameter
    assert snapshot(copy) == snapshot(random_export)


@pytest.mark.skipif(reason := namespace_unavailable_reason(), reason=f"no private mount namespace: {reason}")
def test_full_tmpfs_and_read_only_mount(tmp_path):
    found = mounted_faults(tmp_path)
    for name, message in (("full", "No space left on device"), ("read_only", "Read-only file system")):
        assert found[name].returncode == 2 and message in found[name].stderr and "left as it was" in found[name].stderr
        assert found[f"intact_after_{name}"]


@pytest.fixture(scope="module")
def onnx_classifier(random_export):
    with Classifier(random_export / "model.onnx") as classifier:
        yield classifier


@pytest.mark.long
def test_eight_threads_give_the_sequential_results(onnx_classifier):
    items = [photo_items()[i % 4] for i in range(1000)]
    sequential = [onnx_classifier.logits(item) for item in items]
    threaded = predict_in_threads(onnx_classifier, items, threads=8)
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.long
def test_ten_thousand_predictions_do_not_grow_memory(onnx_classifier):
    before, after = memory_growth(onnx_classifier, photo_items(), 10_000)
    assert after < before * 1.05, f"resident memory grew from {before:.1f} to {after:.1f} MiB"
