"""Images/s of ``smlp-predict --ray`` with 1 and 2 replicas against plain ``smlp-predict`` on the same images, in
the same run, interleaved; and Ray's own start-up cost (the figures behind README, "Batch inference on Ray").

    python docs/benchmarks/ray_batch.py --images 500 --repeats 3 --json docs/benchmarks/ray-batch-cpu-2core.json

Every round runs each command once, as a fresh process, as a user would (so each pays its own start-up), in an
order that rotates from round to round: ``smlp-predict MODEL DIR --json``, ``smlp-predict MODEL DIR --ray
--output OUT.jsonl --replicas 1``, the same with ``--replicas 2``, and a bare local ``ray.init()`` +
``ray.shutdown()``. Ratios are taken within a round and reported as median [min-max] over the rounds. The model is
sMLPNet-T at 224 exported without a checkpoint (throughput does not depend on the weights); the images are crops
of real photographs (the bundled ones and scikit-image's) saved as 500x375 JPEGs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from smlp_deploy import environment
from smlp_deploy.export import export_model
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.progress import format_table
from smlp_deploy.samples import sample_images

BIN = Path(sys.executable).parent
PLAIN = "smlp-predict"
RAY_START = "ray.init + ray.shutdown"
BARE_RAY = """
import json, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
t2 = time.perf_counter()
ray.shutdown(wait_for_processes=True)
print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": time.perf_counter() - t2}))
"""


def make_images(folder: Path, count: int) -> None:
    """``count`` 500x375 JPEG crops of real photographs, deterministic."""
    import skimage

    photos = sample_images() + sorted((Path(skimage.__file__).parent / "data").glob("*.png"))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        with Image.open(photos[i % len(photos)]) as source:
            photo = source.convert("RGB")
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        photo.crop((left, top, left + cw, top + ch)).resize((500, 375)).save(folder / f"{i:04d}.jpg", quality=90)


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout


def ray_summary(stdout: str) -> dict[str, float]:
    """The numbers of smlp-predict --ray's summary table (the line under the header rule)."""
    lines = stdout.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    values = re.split(r"\s{2,}", lines[2].strip())
    row = dict(zip(header, values, strict=True))
    return {"images": int(row["images"]), "seconds": float(row["seconds"]),
            "startup_s": float(row["Ray start-up s"])}


def spread(values: list[float], digits: int = 2) -> str:
    return f"{np.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--artifact", type=Path, help="an exported model (default: export sMLPNet-T fp32 here)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="raybench") as tmp:
        work = Path(tmp)
        artifact = args.artifact
        if artifact is None:
            export_model("tiny", out_dir=work / "export", quiet=True)
            artifact = work / "export" / "model.onnx"
        folder = work / "images"
        make_images(folder, args.images)
        # Ray's session files under tmp (a short path: Unix sockets), no auth token in ~/.ray, no usage stats.
        env = os.environ | {"RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        commands = {
            PLAIN: [str(BIN / "smlp-predict"), str(artifact), str(folder), "--json"],
            **{f"--ray --replicas {n}": [str(BIN / "smlp-predict"), str(artifact), str(folder), "--ray",
                                         "--replicas", str(n)] for n in (1, 2)},
            RAY_START: [sys.executable, "-c", BARE_RAY],
        }
        runs = []
        for round_ in range(args.repeats):
            names = list(commands)
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                command = list(commands[name])
                if "--ray" in command:
                    command += ["--output", str(work / f"out-{round_}-{len(runs)}.jsonl")]
                wall, stdout = run(command, env)
                record = {"round": round_, "name": name, "wall_s": wall}
                if name == PLAIN:
                    record["images"] = len(stdout.splitlines())
                elif name == RAY_START:
                    record.update(json.loads(stdout))
                else:
                    record.update(ray_summary(stdout))
                runs.append(record)
                print(json.dumps(record), flush=True)

    rows, results = [], {}
    for name in commands:
        mine = [r for r in runs if r["name"] == name]
        walls = [r["wall_s"] for r in mine]
        if name == RAY_START:
            results[name] = {k: float(np.median([r[k] for r in mine])) for k in ("import_s", "init_s", "shutdown_s")}
            rows.append([name, spread(walls, 1), "", "", "", "init " + spread([r["init_s"] for r in mine], 1)
                         + " s, shutdown " + spread([r["shutdown_s"] for r in mine], 1) + " s"])
            continue
        rates = [r["images"] / r["wall_s"] for r in mine]
        ratios = [r["images"] / r["wall_s"] / (plain["images"] / plain["wall_s"]) for r in mine
                  for plain in runs if plain["name"] == PLAIN and plain["round"] == r["round"]]
        note = ""
        if name != PLAIN:
            steady = [r["images"] / (r["seconds"] - r["startup_s"]) for r in mine]
            note = (f"start-up {spread([r['startup_s'] for r in mine], 1)} s; "
                    f"{spread(steady, 1)} img/s after it")
        results[name] = {"wall_s": float(np.median(walls)), "images_per_s": float(np.median(rates)),
                         "vs_plain": float(np.median(ratios))}
        rows.append([name, spread(walls, 1), spread(rates, 1), spread(ratios) + "x", mine[0]["images"], note])
    print(format_table(["command", "wall s", "img/s (whole command)", "vs smlp-predict", "images", "notes"], rows))
    if args.json:
        write_json_atomic(args.json, {"env": environment.capture(), "images": args.images,
                                      "repeats": args.repeats, "artifact": str(artifact.name),
                                      "results": results, "runs": runs})


if __name__ == "__main__":
    main()
