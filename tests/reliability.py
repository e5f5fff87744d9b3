"""Fault injection and load for smlp-deploy: the helpers the reliability tests assert with, and the report.

Exports are interrupted (SIGKILL, SIGINT) at chosen steps, run with a file-size limit (a full disk for that
process), and, where user namespaces allow it, on a full tmpfs and a read-only mount; a Classifier is shared by
threads and run for thousands of predictions while its resident memory is read.

Write docs/reliability.md (about five minutes on 2 cores)::

    .venv/bin/python -m tests.reliability --report docs/reliability.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smlp_deploy.samples import sample_images

SIZE = 64  # the test variant at 64 px: a whole export takes seconds
EXPORT_ARGS = ("--variant", "test", "--image-size", str(SIZE))
ROOT = Path(__file__).resolve().parent.parent
# Python code that gives a child the Ctrl-C a terminal gives it: a shell that starts a job in the background (`make
# test &`, nohup, some CI runners) makes it ignore SIGINT, its children inherit that, and Python then never raises
# KeyboardInterrupt, so every test that sends SIGINT would fail.
CTRL_C_AS_IN_A_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "


BUILDING = "Building engine ("  # the TensorRT builder's first progress line: inside a build


def export_command(out: Path, *args: str) -> list[str]:
    """smlp-export in a fresh interpreter (unbuffered, so its progress lines arrive as they are printed)."""
    run = CTRL_C_AS_IN_A_TERMINAL + "from smlp_deploy.cli.export import entry_point; raise SystemExit(entry_point())"
    return [sys.executable, "-u", "-c", run, *EXPORT_ARGS, "--out", str(out), *args]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (hidden ones too) by name, with its sha256: equal snapshots, equal folders."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def debris(folder: Path) -> list[str]:
    """What interrupted runs left beside ``folder`` (staging folders, partial files)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stderr: str


def interrupt_export(out: Path, args: tuple[str, ...], at_step: int | str, sig: signal.Signals,
                     timeout: float = 300) -> Outcome:
    """Start an export and send ``sig`` as soon as it announces step ``at_step`` (``[k/n]``), or prints a line
    holding ``at_step`` if it is text (``"Building engine ("``: inside the TensorRT builder)."""
    process = subprocess.Popen(export_command(out, *args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, cwd=ROOT)
    lines, sent = [], False
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith(f"[{at_step}/") if isinstance(at_step, int) else at_step in line:
                process.send_signal(sig)
                sent = True
                break
        lines += process.stderr.readlines()
        process.wait()
    finally:
        timer.cancel()
        process.kill()
    if not sent:
        raise AssertionError(f"the export never reached step {at_step}:\n{''.join(lines)[-2000:]}")
    return Outcome(process.returncode, "".join(lines))


@dataclass(frozen=True)
class Race:
    first: int  # the export that started its steps first
    pids: list[int]
    outcomes: list[Outcome]


def race_exports(out: Path, runs: tuple[tuple[str, ...], ...], timeout: float = 300) -> Race:
    """Start one export per ``runs`` (each its arguments, without --quiet) into ``out`` at once. The first to
    announce its first step (``[1/n]``) is paused there (SIGSTOP) until every other has ended, so the others surely
    come while it writes, however the machine schedules them; then it goes on to its end."""
    processes = [subprocess.Popen(export_command(out, *args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  text=True, cwd=ROOT) for args in runs]
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()

    def read(i: int) -> None:
        for line in processes[i].stderr:
            lines.put((i, line))
        lines.put((i, None))

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(processes))]
    for reader in readers:
        reader.start()
    stderr: list[list[str]] = [[] for _ in processes]
    first, ended = None, 0
    try:
        while first is None and ended < len(processes):
            i, line = lines.get(timeout=timeout)
            if line is None:
                ended += 1
                continue
            stderr[i].append(line)
            if line.startswith("[1/"):
                first = i
                processes[i].send_signal(signal.SIGSTOP)
        if first is None:
            raise AssertionError("no export started its steps:\n" + "\n".join("".join(s)[-1000:] for s in stderr))
        for i, process in enumerate(processes):
            if i != first:
                process.wait(timeout=timeout)
        processes[first].send_signal(signal.SIGCONT)
        processes[first].wait(timeout=timeout)
    finally:
        for process in processes:
            process.kill()
    for reader in readers:
        reader.join()
    while not lines.empty():
        i, line = lines.get()
        stderr[i] += [line] if line else []
    return Race(first, [p.pid for p in processes],
                [Outcome(p.returncode, "".join(s)) for p, s in zip(processes, stderr, strict=True)])


# Holds the lock of a folder as every writer does (an flock on .<name>.lock beside it), with nothing of smlp_deploy:
# a writer in another container or on another host, whose process id means nothing here.
FLOCK = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', "
         "flush=True); time.sleep(300)")


@contextlib.contextmanager
def foreign_writer(folder: Path) -> Iterator[subprocess.Popen]:
    """A process that holds ``folder``'s writer lock until it is killed (at the latest on the way out)."""
    writer = subprocess.Popen([sys.executable, "-c", FLOCK, str(folder.with_name(f".{folder.name}.lock"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "held\n"
        yield writer
    finally:
        writer.kill()
        writer.wait()


def export_with_file_limit(out: Path, args: tuple[str, ...], limit_bytes: int) -> Outcome:
    """An export whose process may not write a file larger than ``limit_bytes``: to it, the disk is full."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    done = subprocess.run(export_command(out, *args), capture_output=True, text=True, preexec_fn=limit,
                          timeout=300, cwd=ROOT, check=False)
    return Outcome(done.returncode, done.stderr)


def namespace_unavailable_reason() -> str | None:
    """Why mounts in a private user namespace (``unshare -rm``) cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True, text=True, check=False)
    return done.stderr.strip() or None if done.returncode else None


def mounted_faults(workdir: Path) -> dict[str, Outcome | bool]:
    """In a private mount namespace: export into a 4 MiB tmpfs, re-export until the tmpfs is full, then remount
    it read-only and export again. Returns both outcomes and whether the first export survived each."""
    script = f"""
import json, subprocess, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.reliability import export_command, snapshot
mount = "{workdir}/mnt"
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], check=True)
out = __import__("pathlib").Path(mount) / "export"
no_engines = ("--flavour", "none")  # ONNX files only: the 4 MiB are sized for them
subprocess.run(export_command(out, *no_engines, "--quiet"), check=True, capture_output=True)
before = snapshot(out)
full = subprocess.run(export_command(out, *no_engines, "--fp16", "--seed", "2", "--quiet"), capture_output=True,
                      text=True)
after_full = snapshot(out)
subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
read_only = subprocess.run(export_command(out, *no_engines, "--seed", "3", "--quiet"), capture_output=True,
                           text=True)
print(json.dumps({{"full": [full.returncode, full.stderr], "read_only": [read_only.returncode, read_only.stderr],
                  "intact_after_full": after_full == before, "intact_after_read_only": snapshot(out) == before}}))
"""
    (workdir / "mnt").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(f"the mount namespace run failed: {done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"full": Outcome(*found["full"]), "read_only": Outcome(*found["read_only"]),
            "intact_after_full": found["intact_after_full"], "intact_after_read_only": found["intact_after_read_only"]}


def predict_in_threads(classifier, items: list, threads: int) -> list[np.ndarray]:
    """Each item's logits, computed by ``threads`` threads sharing ``classifier``, in the items' order."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(classifier.logits, items))


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_growth(classifier, images: list, calls: int, warmup: int = 200) -> tuple[float, float]:
    """Resident MiB after ``warmup`` predictions and after ``calls`` more, one image per call, cycling."""
    for i in range(warmup):
        classifier.predict(images[i % len(images)])
    before = resident_mib()
    for i in range(calls):
        classifier.predict(images[i % len(images)])
    return before, resident_mib()


def photo_items() -> list:
    """Real photographs in every form ``predict`` takes: path, bytes, PIL image, uint8 array."""
    from PIL import Image

    photos = sample_images()
    return [str(photos[0]), photos[1].read_bytes(), Image.open(photos[2]), np.asarray(Image.open(photos[3]))]


# The report.


def _interruption_section(tmp: Path) -> str:
    from smlp_deploy import Classifier

    out = tmp / "export"
    calib = str(Path(sample_images()[0]).parent)
    int8 = ("--fp16", "--int8", "--int8-target", "both", "--calib-dir", calib)
    subprocess.run(export_command(out, *int8, "--quiet"), check=True, capture_output=True, cwd=ROOT)
    steps = len(re.findall(r"^\[\d+/\d+\]", subprocess.run(export_command(out, *int8), capture_output=True,
                                                                text=True, cwd=ROOT, check=True).stderr, re.M))
    rows = []
    # Each kind of step (the model, calibration, ONNX, a verification, the last) and, by the builder's own progress
    # line, the inside of a TensorRT-for-RTX engine build.
    for at_step in (1, 3, 5, 8, 9, steps, BUILDING):
        for sig in (signal.SIGKILL, signal.SIGINT):
            before = snapshot(out)
            outcome = interrupt_export(out, (*int8, "--seed", "5"), at_step, sig)
            intact = snapshot(out) == before
            predicts = bool(Classifier(out / "model.int8.onnx").predict(str(sample_images()[0])).label)
            where = f"[{at_step}/{steps}]" if isinstance(at_step, int) else "inside an RTX engine build"
            rows.append(f"| {sig.name} | {where} | {outcome.returncode} | {'yes' if intact else 'NO'} | "
                        f"{'yes' if predicts else 'NO'} | {', '.join(debris(out)) or '-'} |")
    rerun = subprocess.run(export_command(out, *int8, "--seed", "5", "--quiet"), capture_output=True, text=True,
                           cwd=ROOT, check=False)
    return ("## Interrupted exports\n\nAn INT8 export (`smlp-export --variant test --image-size 64 --fp16 --int8 "
            f"--int8-target both --calib-dir <bundled photos>`, {steps} steps, its TensorRT-for-RTX engines "
            "included) into a folder holding an earlier export, interrupted as each step starts, and inside an "
            "engine build (at the builder's own first progress line). *Intact*: every file of the earlier export "
            "byte-identical afterwards; *predicts*: `Classifier(model.int8.onnx)` works. A killed run leaves its "
            "staging folder and its lock file, unlocked (*debris*), which the next export removes.\n\n"
            "| signal | at step | exit status | earlier export intact | predicts | debris |\n"
            "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows)
            + f"\n\nThe next, uninterrupted run: exit status {rerun.returncode}, debris left: "
            f"{', '.join(debris(out)) or 'none'}.\n")


def _writers_section(tmp: Path) -> str:
    """Two exports into one folder, overlapping for sure (race_exports)."""
    import json

    out = tmp / "export"
    race = race_exports(out, tuple(("--flavour", "none", "--seed", str(seed)) for seed in (1, 2)))
    first, other = race.outcomes[race.first], race.outcomes[1 - race.first]
    seed = json.loads((out / "manifest.json").read_text())["model"]["seed"] if out.is_dir() else None
    refused = other.stderr.strip().splitlines()[-1] if other.stderr.strip() else "(nothing)"
    return ("## Two writers\n\nTwo `smlp-export --variant test --image-size 64 --flavour none` runs into one "
            "folder (seeds 1 and 2), started together; the first to start its steps is paused in them until the "
            "other has ended, so they overlap whatever the load.\n\n"
            f"* the first (seed {race.first + 1}): exit status {first.returncode}\n"
            f"* the other: exit status {other.returncode}, `{refused}`\n"
            f"* the folder afterwards holds the export of seed {seed}; debris: {', '.join(debris(out)) or 'none'}\n")


def _storage_section(tmp: Path) -> str:
    out = tmp / "export"
    subprocess.run(export_command(out, "--quiet"), check=True, capture_output=True, cwd=ROOT)
    before = snapshot(out)
    limited = export_with_file_limit(out, ("--fp16", "--seed", "6"), 300_000)
    lines = [f"* files limited to 300 kB (`RLIMIT_FSIZE`): exit status {limited.returncode}, "
             f"`{limited.stderr.strip().splitlines()[-1]}`; earlier export intact: {snapshot(out) == before}"]
    reason = namespace_unavailable_reason()
    if reason:
        lines.append(f"* tmpfs and read-only mount: not run here ({reason})")
    else:
        mounted = mounted_faults(tmp / "namespace")
        for name, title in (("full", "a full 4 MiB tmpfs"), ("read_only", "a read-only remount")):
            outcome = mounted[name]
            lines.append(f"* {title}: exit status {outcome.returncode}, `{outcome.stderr.strip().splitlines()[-1]}`; "
                         f"earlier export intact: {mounted['intact_after_' + name]}")
    return "## Full disk and read-only folders\n\n" + "\n".join(lines) + "\n"


def _outcomes(strategy, call, examples: int) -> dict[str, int]:
    """How ``examples`` values drawn from ``strategy`` end when passed to ``call``: a result, a documented error
    (SmlpDeployError) or another exception."""
    from hypothesis import HealthCheck, given, settings

    from smlp_deploy import SmlpDeployError

    counts = {"result": 0, "documented error": 0, "other exception": 0}

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def run(value):
        try:
            call(value)
            counts["result"] += 1
        except SmlpDeployError:
            counts["documented error"] += 1
        except Exception:  # counted: the report shows whether any escaped
            counts["other exception"] += 1

    run()
    return counts


def _fuzz_section(tmp: Path, examples: int) -> str:
    """Random values through each entry point; every outcome must be a result or a documented error."""
    from smlp_deploy import Classifier
    from smlp_deploy.export import export_model
    from smlp_deploy.preprocess_config import PreprocessConfig
    from smlp_deploy.runtime.preprocess import Preprocessor
    from tests.test_inputs import ANY, images

    export_model("test", image_size=SIZE, out_dir=tmp / "fuzz", quiet=True)
    classifier = Classifier(tmp / "fuzz" / "model.onnx")
    preprocess = Preprocessor(PreprocessConfig.for_image_size(SIZE))
    rows = []
    for name, strategy, call in (
        ("`Classifier.predict`", ANY, classifier.predict),
        ("`Classifier.logits`", ANY, classifier.logits),
        ("`Preprocessor` (any mode, 1 px to 3000 px strips)", images(max_side=400), preprocess),
    ):
        counts = _outcomes(strategy, call, examples)
        rows.append(f"| {name} | {sum(counts.values())} | {counts['result']} | {counts['documented error']} | "
                    f"{counts['other exception']} |")
    return ("## Inputs\n\nValues drawn by the strategies of `tests/test_inputs.py` (None, numbers, text, bytes, "
            "dicts, PIL images of every mode and shape, encoded and truncated images, arrays of every dtype and "
            "shape with NaN and infinities, lists and tuples of these).\n\n| entry point | cases | result | "
            "documented error | other exception |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


def _load_section(tmp: Path) -> str:
    from smlp_deploy import Classifier
    from smlp_deploy.export import export_model

    export_model("test", image_size=SIZE, out_dir=tmp / "load", quiet=True)
    classifier = Classifier(tmp / "load" / "model.onnx")
    items = [photo_items()[i % 4] for i in range(1000)]
    sequential = [classifier.logits(item) for item in items]
    threaded = predict_in_threads(classifier, items, threads=8)
    same = all(np.array_equal(a, b) for a, b in zip(sequential, threaded, strict=True))
    before, after = memory_growth(classifier, photo_items(), 10_000)
    return (f"## Load\n\n* 8 threads sharing one Classifier (`model.onnx`, ONNX Runtime CPU), 1,000 predictions: "
            f"identical to the sequential results: {same}\n* 10,000 predictions after 200 warm-up ones: resident "
            f"memory {before:.1f} -> {after:.1f} MiB ({(after - before) / before:+.2%})\n")


def _shape_cost_section() -> str:
    """Resize-and-crop of extreme shapes, against resizing the whole image first (what 0.1.0 did)."""
    from PIL import Image

    from smlp_deploy.preprocess_config import PreprocessConfig
    from smlp_deploy.runtime.preprocess import Preprocessor

    preprocess = Preprocessor(PreprocessConfig())
    rows = []
    for w, h in ((1, 10_000), (10_000, 1), (4000, 3000), (1, 1)):
        image = Image.new("RGB", (w, h), (120, 60, 30))
        start = time.perf_counter()
        preprocess.resize_crop(image)
        cropped = time.perf_counter() - start
        short = 256
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        start = time.perf_counter()
        image.resize(size, Image.Resampling.BICUBIC)
        whole = time.perf_counter() - start
        rows.append(f"| {w}x{h} | {size[0]}x{size[1]} | {whole * 1e3:.1f} | {cropped * 1e3:.1f} |")
    return ("## Preprocessing cost by shape\n\nOne decoded image: resizing the whole image to a 256-px short side "
            "(0.1.0) against resampling only the 224x224 crop's region (now), one run each.\n\n| image | whole "
            "image resized to | whole, ms | crop region, ms |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


def write_report(path: Path, examples: int) -> None:
    import smlp_deploy

    sections = [f"# Reliability\n\nWritten by `.venv/bin/python -m tests.reliability --report {path}` (smlp-deploy "
                f"{smlp_deploy.__version__}, {time.strftime('%Y-%m-%d')}, {len(os.sched_getaffinity(0))} cores). "
                "The same helpers back `tests/test_reliability.py`, `tests/test_inputs.py` and "
                "`tests/test_classifier.py`, which assert what this page reports.\n"]
    with tempfile.TemporaryDirectory(prefix="smlp-reliability-") as folder:
        tmp = Path(folder)
        sections += [_fuzz_section(tmp, examples), _interruption_section(tmp / "kill"),
                     _writers_section(tmp / "writers"), _storage_section(tmp / "storage"), _load_section(tmp),
                     _shape_cost_section()]
    path.write_text("\n".join(sections))


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--report", type=Path, required=True, help="write the markdown report here")
    cli.add_argument("--examples", type=int, default=1000, help="random cases per entry point (default: 1000)")
    options = cli.parse_args()
    write_report(options.report, options.examples)
