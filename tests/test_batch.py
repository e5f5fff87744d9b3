"""smlp_deploy.batch and ``smlp-predict --ray``: Ray Data batch inference agrees with single-process smlp-predict.

The Ray tests run a local Ray (started and stopped by each call, or by the test) bound to 127.0.0.1, with its
session files under the test's temporary folder; each is bounded by Ray's no-progress timeout and subprocess
timeouts, and every process a test starts is ended by the test, also when it fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smlp_deploy import Classifier
from smlp_deploy.batch import plan_replicas, predict_dataset
from smlp_deploy.batch.inputs import image_paths
from smlp_deploy.cli.predict import main as predict_main
from smlp_deploy.errors import ImageError, InputError, OutputError, SmlpDeployError
from smlp_deploy.export import export_model
from smlp_deploy.samples import sample_images

from .conftest import SKIMAGE_DATA, ray_environment
from .digits import CHECKPOINT as DIGITS

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="needs the ray extra: pip install 'smlp-deploy[ray]' (make test installs it)")
TOPK = 3
GENERATED = 270
RUN = dict(topk=TOPK, batch_size=8, no_progress_timeout_s=120, quiet=True)  # a stall fails the test in 2 min


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """The trained digits model (10 classes, 64x64) as an ONNX export: real weights, so top-k is well defined."""
    out = tmp_path_factory.mktemp("batch") / "export"
    export_model("test", checkpoint=DIGITS, num_classes=10, image_size=64, out_dir=out, quiet=True, flavours=())
    return out / "model.onnx"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """About 300 images in nested folders: the bundled photos, scikit-image's, crops of them in every mode and
    format the preprocessing meets (L, RGB, RGBA, P; JPEG, PNG, WebP, BMP, GIF, TIFF; thin and tiny ones), and 5
    files that cannot be read."""
    root = tmp_path_factory.mktemp("images")
    photos = sample_images() + sorted(p for p in SKIMAGE_DATA.iterdir() if p.suffix in (".png", ".jpg"))
    for i, photo in enumerate(photos):
        target = root / "photos" / f"{i:02d}-{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo.read_bytes())
    rng = np.random.default_rng(0)
    formats = {"RGB": ["jpg", "png", "webp", "bmp", "tiff"], "L": ["jpg", "png", "gif"], "RGBA": ["png", "webp"],
               "P": ["png", "gif", "bmp"]}
    for i in range(GENERATED):
        with Image.open(photos[i % len(photos)]) as source:
            photo = source.convert("RGB")
        w, h = photo.size
        left, top = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        right, bottom = left + int(rng.integers(8, w - left + 1)), top + int(rng.integers(8, h - top + 1))
        crop = photo.crop((left, top, right, bottom))
        size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        mode = list(formats)[i % len(formats)]
        image = crop.resize(size).convert(mode)
        target = root / "generated" / str(i % 7) / f"{i:03d}.{formats[mode][i % len(formats[mode])]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
    bad = root / "unreadable"
    bad.mkdir()
    (bad / "text.jpg").write_text("not an image")
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(sample_images()[0].read_bytes()[:3000])
    (bad / "noise.webp").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (bad / "header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return root


@pytest.fixture(scope="module")
def reference(artifact, images) -> dict[str, dict]:
    """What single-process ``smlp-predict --json`` says about every image, by absolute path."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert predict_main([str(artifact), str(images.absolute()), "--json", "--topk", str(TOPK)]) == 1
    return {record["image"]: record for record in map(json.loads, printed.getvalue().splitlines())}


@pytest.fixture(scope="module")
def ray_env():
    """Ray, imported inside conftest's ray_environment (127.0.0.1 only, session files in a short folder)."""
    with ray_environment():
        import ray

        yield ray
        assert not ray.is_initialized(), "a test left Ray connected"


def rows_of(output: Path) -> list[dict]:
    if output.suffix == ".jsonl":
        return [json.loads(line) for line in output.read_text().splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(output).to_pylist()


def assert_rows_match(rows: list[dict], reference: dict[str, dict]) -> None:
    """One row per image, none twice; each equal to smlp-predict's: same top-k classes and labels, scores to
    float32 rounding (replicas batch differently), bad files as error rows with the same message."""
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "duplicate rows"
    assert set(paths) == set(reference)
    for row in rows:
        expected = reference[row["path"]]
        if "error" in expected:
            assert (row["error"], row["topk"], row["scores"]) == (expected["error"], [], [])
        else:
            assert row["error"] is None
            assert row["topk"] == [t["index"] for t in expected["topk"]]
            assert row["labels"] == [t["label"] for t in expected["topk"]]
            np.testing.assert_allclose(row["scores"], [t["score"] for t in expected["topk"]], rtol=1e-5, atol=1e-7)


def session_processes(session: int) -> list[int]:
    """Every process in session ``session`` (a driver started with start_new_session and what it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses of the TCP sockets these processes listen on (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if (target := os.readlink(fd)).startswith("socket:["):
                    inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints 32-bit words
                found.add(socket.inet_ntop(family, words))
    return found


def end_session(session: int) -> None:
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- without Ray
def test_replicas_never_take_every_cpu_on_a_cpu_machine():
    """2 CPUs: the replicas share one CPU, so a read or filter task always has the other (Ray 2.60 waits forever
    otherwise); inference threads still fill the cores. GPUs: one per replica, preprocessing as 1-CPU tasks."""
    one, two = plan_replicas({"CPU": 2.0}, 1, None, None), plan_replicas({"CPU": 2.0}, 2, None, None)
    assert (one.cpus, one.preprocess_cpus, one.gpus, one.threads) == (1.0, 1.0, 0.0, 2)
    assert (two.cpus, two.preprocess_cpus, two.threads, two.cpus_needed()) == (0.5, 0.5, 1, 1.0)
    assert plan_replicas({"CPU": 1.0}, 1, None, None).cpus == 0.5
    gpu = plan_replicas({"CPU": 16.0, "GPU": 4.0}, 4, None, None)
    assert (gpu.gpus, gpu.cpus, gpu.preprocess_cpus, gpu.threads, gpu.cpus_needed()) == (1.0, 1.0, 1.0, None, 5.0)
    chosen = plan_replicas({"CPU": 16.0, "GPU": 4.0}, 2, 0.5, 3)
    assert (chosen.gpus, chosen.cpus) == (0.5, 3.0)


def test_image_paths_from_a_folder_and_from_a_list_file(images, tmp_path):
    found = image_paths(images)
    assert len(found) == len(sample_images()) + len(list(SKIMAGE_DATA.glob("*.[pj][np]g"))) + GENERATED + 5
    assert all(Path(p).is_absolute() for p in found) and found == sorted(found)
    listing = tmp_path / "lists" / "images.txt"
    listing.parent.mkdir()
    listing.write_text(f"../a.jpg\n\n{images}/photos/00-astronaut.jpg\n../a.jpg\nsub dir/b c.png\n")
    assert image_paths(listing) == [str(tmp_path / "lists" / ".." / "a.jpg"), f"{images}/photos/00-astronaut.jpg",
                                    str(tmp_path / "lists" / "sub dir" / "b c.png")]


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist: pass a folder of images, a text file"),
    ("one.jpg", "is one image: pass a folder"),
    ("blank.txt", "names no images: write one image path per line"),
    ("binary.txt", "is not a readable text file of image paths"),
    ("empty", "holds no images"),
])
def test_unusable_inputs_are_named(tmp_path, case, message):
    (tmp_path / "one.jpg").write_bytes(sample_images()[0].read_bytes())
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=message) as info:
        image_paths(tmp_path / case)
    assert info.value.parameter == "images"


@pytest.mark.parametrize("argument, value", [("replicas", 0), ("batch_size", 2.5), ("topk", 0), ("replicas", True),
                                             ("cpus_per_replica", 0), ("gpus_per_replica", -1),
                                             ("no_progress_timeout_s", float("nan"))])
def test_bad_arguments_fail_before_anything_starts(tmp_path, argument, value):
    with pytest.raises(InputError, match=f"{argument} must be") as info:
        predict_dataset(tmp_path, tmp_path / "model.onnx", output=tmp_path / "out.jsonl", **{argument: value})
    assert info.value.parameter == argument and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("argv, message", [
    (["--output", "o.jsonl"], "--output: only with --ray"),
    (["--ray"], "--ray takes one folder or list file and --output"),
    (["--ray", "--output", "o.jsonl", "--json"], "--json does not apply with --ray"),
    (["--verbose"], "--verbose: only with --ray"),
])
def test_cli_ray_flags_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        predict_main(["model.onnx", "images", *argv])
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- output files
def result_table(paths: list[str], error: str | None = None):
    import pyarrow as pa

    from smlp_deploy.batch.stages import result_schema

    n = len(paths)
    return pa.Table.from_pydict({"path": paths, "topk": [[1, 2]] * n, "labels": [["a", "b"]] * n,
                                 "scores": [[0.75, 0.25]] * n, "error": [error] * n}, schema=result_schema())


@needs_ray
def test_jsonl_resume_cuts_a_torn_line_and_keeps_whole_ones(tmp_path):
    from smlp_deploy.batch.output import open_sink

    output = tmp_path / "out.jsonl"
    sink = open_sink(output, resume=False)
    sink.write(result_table(["/a", "/b"]))
    sink.write(result_table(["/c"], error="image /c: no such file"))
    sink.close()
    whole = output.read_bytes()
    output.write_bytes(whole + b'{"path": "/d", "topk": [1')  # killed mid-write
    with pytest.raises(InputError, match="already exists: pass resume=True"):
        open_sink(output, resume=False)
    sink = open_sink(output, resume=True)
    assert sink.done == {"/a", "/b", "/c"} and output.read_bytes() == whole
    with pytest.raises(OutputError, match="is being written by another run"):
        open_sink(output, resume=True)
    sink.close()
    output.write_bytes(whole + b"[1, 2]\n" + whole)
    with pytest.raises(InputError, match="line 4 is not a result row"):
        open_sink(output, resume=True)
    output.write_bytes(whole)
    open_sink(output, resume=True).close()  # the refusal released its lock


@needs_ray
def test_parquet_parts_rotate_resume_and_read_as_one_table(tmp_path):
    import pyarrow.parquet as pq

    from smlp_deploy.batch.output import ParquetPartsSink

    output = tmp_path / "out.parquet"
    sink = ParquetPartsSink(output, resume=False, part_rows=3)
    for name in "abcdefg":
        sink.write(result_table([f"/{name}"]))
    assert sorted(p.name for p in output.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    sink.close()  # writes the 7th row as a third part
    (output / ".part-000003.parquet.1234abcd.part").write_bytes(b"PAR1 cut short")  # a killed run's open part
    sink = ParquetPartsSink(output, resume=True, part_rows=3)
    assert sink.done == set(f"/{name}" for name in "abcdefg")
    assert not list(output.glob(".*"))
    sink.write(result_table(["/h"]))
    sink.close()
    table = pq.read_table(output)
    assert table.num_rows == 8 and str(table.schema.field("error").type) == "string"
    assert sorted(p.name for p in output.iterdir())[-1] == "part-000003.parquet"


@needs_ray
def test_a_failed_run_leaves_no_empty_output(tmp_path):
    from smlp_deploy.batch.output import open_sink

    for name in ("out.jsonl", "out.parquet"):
        open_sink(tmp_path / name, resume=False).close(discard_if_empty=True)
        assert not (tmp_path / name).exists()


# ---------------------------------------------------------------------------------------------- on Ray
@needs_ray
def test_two_replicas_give_the_rows_of_single_process_predict(ray_env, artifact, images, reference, tmp_path):
    output = tmp_path / "out.jsonl"
    summary = predict_dataset(images, artifact, output=output, replicas=2, **RUN)
    assert_rows_match(rows_of(output), reference)
    errors = sum("error" in r for r in reference.values())
    assert errors == 5 and (summary.images, summary.errors, summary.skipped) == (len(reference), errors, 0)
    assert summary.model.startswith("onnxruntime") and summary.replicas == 2


@needs_ray
def test_a_clean_cli_run_prints_none_of_rays_own_messages(ray_env, artifact, tmp_path):
    """Ray's C++ core writes a core_worker.cc line for Ray Data's actor pool (ray#53727) on every run: it goes to
    a log file, and to the terminal only with --verbose. Stdout, and this toolkit's stderr, are unchanged."""
    images = tmp_path / "photos"
    images.mkdir()
    for photo in sample_images()[:2]:
        (images / photo.name).write_bytes(photo.read_bytes())
    command = [str(Path(sys.executable).parent / "smlp-predict"), str(artifact), str(images), "--ray"]
    quiet = subprocess.run([*command, "--output", str(tmp_path / "quiet.jsonl")], capture_output=True, text=True,
                           timeout=300, check=False)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "1 replica(s) of onnxruntime" in quiet.stdout
    loud = subprocess.run([*command, "--output", str(tmp_path / "loud.jsonl"), "--verbose"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert loud.returncode == 0 and "core_worker.cc" in loud.stderr, loud.stderr
    assert rows_of(tmp_path / "quiet.jsonl") == rows_of(tmp_path / "loud.jsonl")


@needs_ray
def test_list_file_to_parquet_then_resume_adds_only_the_rest(ray_env, artifact, images, reference, tmp_path):
    """A text file of paths, half of them first; the full list then resumes, with a missing file as an error."""
    paths = sorted(reference)
    first, everything = tmp_path / "first.txt", tmp_path / "all.txt"
    first.write_text("\n".join(paths[: len(paths) // 2]) + "\n")
    missing = str(images / "gone.jpg")
    everything.write_text("\n".join([*paths, missing]) + "\n")
    output = tmp_path / "out.parquet"
    done = predict_dataset(first, artifact, output=output, **RUN)
    assert done.images == len(paths) // 2
    summary = predict_dataset(everything, artifact, output=output, resume=True, **RUN)
    assert (summary.skipped, summary.images) == (len(paths) // 2, len(paths) - len(paths) // 2 + 1)
    with pytest.raises(ImageError) as missing_error:  # what the runtime says about it in one process
        Classifier(artifact).predict(missing)
    assert_rows_match(rows_of(output), {**reference, missing: {"error": str(missing_error.value)}})
    assert predict_dataset(everything, artifact, output=output, resume=True, **RUN).images == 0  # nothing left


@needs_ray
def test_killed_run_resumes_with_only_the_missing_rows(ray_env, artifact, images, reference, tmp_path):
    """``smlp-predict --ray`` is SIGKILLed once rows arrive (its local Ray listening on 127.0.0.1 only); the
    resumed run adds exactly the rows the first one did not write."""
    output = tmp_path / "out.jsonl"
    command = [str(Path(sys.executable).parent / "smlp-predict"), str(artifact), str(images), "--ray", "--output",
               str(output), "--topk", str(TOPK), "--batch-size", "4"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (output.exists() and output.stat().st_size) and driver.poll() is None:
            assert time.monotonic() < deadline, "no rows within 240 s"
            time.sleep(0.05)
        assert driver.poll() is None, driver.stdout.read().decode()
        addresses = listening_addresses(session_processes(driver.pid))
        assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
        driver.kill()
        driver.wait(timeout=30)
    finally:
        driver.kill()
        end_session(driver.pid)  # the Ray processes the killed driver leaves behind
    before = output.read_bytes()
    whole = before[: before.rfind(b"\n") + 1]
    written = len(whole.splitlines())
    assert 0 < written < len(reference), "the kill should land mid-run"
    summary = predict_dataset(images, artifact, output=output, resume=True, **RUN)
    assert (summary.skipped, summary.images) == (written, len(reference) - written)
    assert output.read_bytes().startswith(whole)
    assert_rows_match(rows_of(output), reference)


@needs_ray
def test_an_existing_cluster_by_address_and_a_callers_dataset(ray_env, artifact, images, reference, random_export,
                                                              tmp_path):
    """``ray start --head`` (127.0.0.1): a call joins it by address and leaves it running; a caller's own
    connection and Dataset are used and left open; a worker's warnings reach the caller; resources the cluster
    cannot free end in an error, not a hang."""
    ray = ray_env
    port = free_port()
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = f"127.0.0.1:{port}"
        paths = sorted(reference)[:40]
        listing = tmp_path / "list.txt"
        listing.write_text("\n".join(paths) + "\n")
        summary = wait_for_cluster(lambda: predict_dataset(listing, artifact, output=tmp_path / "a.jsonl",
                                                           address=address, **RUN))
        assert summary.images == 40 and not ray.is_initialized()
        assert_rows_match(rows_of(tmp_path / "a.jsonl"), {p: reference[p] for p in paths})

        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
            dataset = ray.data.from_items([{"file": p, "split": "val"} for p in paths])
            with pytest.raises(InputError, match="none named 'path'"):
                predict_dataset(dataset, artifact, output=tmp_path / "b.parquet", **RUN)
            dataset = dataset.rename_columns({"file": "path"})
            summary = predict_dataset(dataset, artifact, output=tmp_path / "b.parquet", replicas=2, **RUN)
            assert summary.images == 40 and ray.is_initialized()
            assert_rows_match(rows_of(tmp_path / "b.parquet"), {p: reference[p] for p in paths})
            assert predict_dataset(dataset, artifact, output=tmp_path / "b.parquet", resume=True, **RUN).images == 0

            # What loading the model warns in a worker reaches the caller, once.
            with pytest.warns(UserWarning, match=r"random weights \(seed 3\)") as warned:
                predict_dataset(listing, random_export / "model.onnx", output=tmp_path / "r.jsonl", **RUN)
            assert len([w for w in warned if "random weights" in str(w.message)]) == 1

            # Two replicas holding both CPUs, and read_text needing a third: Ray would wait forever.
            stalled = ray.data.read_text(str(listing)).rename_columns({"text": "path"})
            with pytest.raises(SmlpDeployError, match="made no progress for 15 s"):
                predict_dataset(stalled, artifact, output=tmp_path / "c.jsonl", replicas=2, cpus_per_replica=1,
                                **{**RUN, "no_progress_timeout_s": 15})
            assert not (tmp_path / "c.jsonl").exists()
        finally:
            ray.shutdown()
    finally:
        head.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        end_session(head.pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_cluster(call, timeout: float = 120):
    """Call ``call`` once the head started by the test accepts connections (``ray start`` takes a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except InputError as exc:
            if "cannot connect" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


@needs_ray
def test_replicas_on_openvino_in_bf16(ray_env, artifact, tmp_path):
    """CPU replicas open the model on OpenVINO in the precision asked for; their rows are single-process
    smlp-predict's with the same backend (bf16 logits differ from FP32 ones, so the reference is bf16 too)."""
    pytest.importorskip("openvino", reason="needs OpenVINO (extra 'openvino')")
    from smlp_deploy.cpu import openvino_cpu_capabilities

    precision = "bf16" if "BF16" in openvino_cpu_capabilities() else "fp32"
    photos = [str(p.absolute()) for p in sample_images()]
    (tmp_path / "list.txt").write_text("\n".join(photos) + "\n")
    output = tmp_path / "out.jsonl"
    summary = predict_dataset(tmp_path / "list.txt", artifact, output=output, backend="openvino", precision=precision,
                              **RUN)
    assert summary.model.startswith("openvino") and f"CPU {precision} (model.onnx)" in summary.model
    with Classifier(artifact, backend="openvino", precision=precision) as classifier:
        expected = dict(zip(photos, classifier.predict(photos, topk=TOPK), strict=True))
    rows = rows_of(output)
    assert sorted(row["path"] for row in rows) == sorted(photos)
    for row in rows:
        assert row["topk"] == [index for index, _, _ in expected[row["path"]].topk]
        np.testing.assert_allclose(row["scores"], [score for _, _, score in expected[row["path"]].topk], atol=1e-3)
