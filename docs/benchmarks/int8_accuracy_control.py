"""INT8 under an accuracy budget on the outlier fixture: this project's remedies against NNCF's
``quantize_with_accuracy_control``.

The fixture (tests/outliers.py): the digits model (``smlp_deploy/samples/smlpnet_digits.pth``, 64 px) with 2
channels per channel MLP rescaled by ``k`` (LayerNorm's affine times k, fc1's input column over k: FP32 unchanged).
Every tool gets the same FP32 ONNX file (the export's own ``model.onnx`` of the fixture), the same 256 calibration
images (drawn from the train split as ``smlp-export`` draws them, seed 0) and the same budget: at most 0.5 point of
top-1 below FP32 on the 450 held-out images, which are also what each search validates on. Rows:

* ``int8``: every layer quantized (the export today), TensorRT form and CPU form, fp32 float parts;
* ``smoothing``: calibration/smoothing.py, then calibrated and quantized again;
* ``fallback (error-added)`` / ``fallback (one-at-a-time)``: calibration/fallback.py with each ranking;
* ``smoothing + fallback``: both, the fallback with the error-added ranking;
* ``nncf``: NNCF 3.4's ``quantize_with_accuracy_control`` on its ONNX backend (preset performance: symmetric
  INT8 like the TensorRT form, ``max_drop=0.005`` absolute on top-1 as a fraction, ``subset_size=256``), with
  ``AdvancedQuantizationParameters(disable_bias_correction=True)``: its fast bias correction fails on sMLPNet's
  graph ("cannot reshape array of size 3136 into shape (56,1)"); everything else at its defaults.

Each row runs in a fresh process, whose peak resident memory (``VmHWM``) is reported with the resident
memory it had before the search started (imports, model, data); ``seconds`` is the search alone (calibration
included where the row calibrates again). Float layers are the Conv/MatMul/Gemm nodes without Q/DQ on their
activation input. NNCF runs in a virtual environment of its own, never the project's::

    python3 -m venv /work/venvs/nncf31 && /work/venvs/nncf31/bin/pip install nncf==3.4.0 onnx onnxruntime
    .venv/bin/python docs/benchmarks/int8_accuracy_control.py --nncf-python /work/venvs/nncf31/bin/python \\
        --json docs/benchmarks/int8-accuracy-control-digits.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SAMPLES = 256
BUDGET_POINTS = 0.5
ROWS = ("int8", "smoothing", "fallback (error-added)", "fallback (one-at-a-time)", "smoothing + fallback")
NNCF_RUNNER = """
import json, sys, time
import numpy as np, onnx, onnxruntime as ort
import nncf
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
fp32, calibration, inputs, labels, out = sys.argv[1:6]
calibration, inputs, labels = np.load(calibration), np.load(inputs), np.load(labels)
model = onnx.load(fp32)
def validate(model, items):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    hits = [int(session.run(None, {"input": x[None]})[0].argmax() == y) for x, y in items]
    return float(np.mean(hits)), hits
def peak_mib():
    status = open("/proc/self/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
start_mib = peak_mib()
start = time.perf_counter()
quantized = nncf.quantize_with_accuracy_control(
    model, nncf.Dataset(list(calibration), lambda x: {"input": x[None]}),
    nncf.Dataset(list(zip(inputs, labels))), validate, max_drop=0.005, drop_type=nncf.DropType.ABSOLUTE,
    preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calibration),
    advanced_quantization_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
seconds = time.perf_counter() - start
onnx.save(quantized, out)
print(json.dumps({"seconds": seconds, "start_mib": start_mib, "peak_mib": peak_mib()}))
"""


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: reset by exec, where ru_maxrss keeps the parent's)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def worst_cosine(logits: np.ndarray, reference: np.ndarray) -> float:
    """The lowest logit cosine against FP32 over the held-out images (the parity gate's measure)."""
    norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.min(np.sum(logits * reference, axis=1) / np.maximum(norms, 1e-30)))


def float_layers(model) -> int:
    """Conv/MatMul/Gemm nodes whose activation input is not dequantized."""
    constants = {i.name for i in model.graph.initializer}
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
               and not any(made_by.get(t) == "DequantizeLinear" for t in n.input if t and t not in constants))


def ours(case: Path, row: str, target: str) -> dict:
    """One row of this project's, in this process (run it fresh: its peak memory is the row's)."""
    import time

    import onnx

    from smlp_deploy.calibration import TARGETS, calibrated_tensors, compute_ranges, get_method, load_calibration_set
    from smlp_deploy.calibration.budget import AccuracyBudget, HeldOut
    from smlp_deploy.calibration.fallback import search_fallback
    from smlp_deploy.calibration.quantize import quantize_qdq
    from smlp_deploy.calibration.smoothing import channel_maxima, smooth, smoothing_sites
    from smlp_deploy.calibration.tensors import Runner
    from smlp_deploy.models import PreprocessConfig

    fp32 = case / "model.onnx"
    inputs, labels = np.load(case / "inputs.npy"), np.load(case / "labels.npy")
    calib = load_calibration_set(json.loads((case / "case.json").read_text())["train"],
                                 PreprocessConfig.for_image_size(64), samples=SAMPLES, quiet=True)
    float_model = onnx.load(str(fp32))
    held_out = HeldOut(inputs, labels, Runner(float_model).logits(inputs))
    ranking = "one-at-a-time" if "one-at-a-time" in row else "error-added"
    budget = AccuracyBudget(max_top1_drop=BUDGET_POINTS, ranking=ranking)
    start_mib = peak_mib()
    start = time.perf_counter()
    source, smoothed = fp32, 0
    if row.startswith("smoothing"):
        sites = smoothing_sites(float_model)
        maxima, samples = channel_maxima(str(fp32), calib, sites)
        float_model, records = smooth(float_model, maxima, samples, sites)
        smoothed = sum(r.alpha is not None for r in records)
        source = case / "smoothed.onnx"
        onnx.save(float_model, str(source))
    ranges = compute_ranges(source, calib, get_method("percentile"), calibrated_tensors(float_model, TARGETS),
                            quiet=True)

    def quantize(keep: frozenset[str]) -> onnx.ModelProto:
        return quantize_qdq(source, ranges, TARGETS[target], keep_float=keep)

    evaluations, keep = 1, []
    if "fallback" in row:
        result = search_fallback(float_model, quantize, held_out, budget)
        evaluations, keep = result.evaluations, result.keep_float
    model = quantize(frozenset(keep))
    seconds = time.perf_counter() - start
    logits = Runner(model).logits(inputs)
    evaluation = held_out.evaluate(logits, budget)
    return {"top1": evaluation.value, "meets": evaluation.meets, "float_layers": float_layers(model),
            "worst_cosine": worst_cosine(logits, held_out.reference),
            "smoothed_sites": smoothed, "evaluations": evaluations, "seconds": round(seconds, 2),
            "start_mib": start_mib, "peak_mib": peak_mib()}


def prepare(case: Path, k: float, seed: int, digits: dict[str, Path]) -> dict:
    """The fixture for ``k`` and channel seed ``seed``: its FP32 export, calibration and held-out arrays."""
    import torch

    from smlp_deploy.calibration import load_calibration_set
    from smlp_deploy.export import export_model
    from smlp_deploy.models import create_model
    from tests.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, load_split
    from tests.outliers import choose_channels, max_relative_difference, save_checkpoint, with_outliers

    base = create_model("test", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, checkpoint=CHECKPOINT)
    inputs, labels = load_split(digits["test"])
    model, outliers = with_outliers(base, k, choose_channels(base, seed=seed))
    export = export_model("test", checkpoint=save_checkpoint(model, case / "fixture.pth"), num_classes=NUM_CLASSES,
                          image_size=IMAGE_SIZE, out_dir=case / "export", flavours=(), quiet=True)
    (case / "model.onnx").write_bytes((export.out_dir / "model.onnx").read_bytes())
    calib = load_calibration_set(digits["train"], export.manifest.preprocess, samples=SAMPLES, quiet=True)
    np.save(case / "calibration.npy", np.stack(list(calib.images())))
    np.save(case / "inputs.npy", inputs)
    np.save(case / "labels.npy", labels)
    (case / "case.json").write_text(json.dumps({"train": str(digits["train"])}))
    fp32_change = max_relative_difference(base, model, torch.from_numpy(inputs))
    return {"k": k, "channel_seed": seed, "channels": {n: list(c) for n, c in outliers.channels.items()},
            "fp32_max_relative_difference": fp32_change}


def nncf(case: Path, python: str) -> dict:
    import onnx

    from smlp_deploy.calibration.budget import AccuracyBudget, HeldOut
    from smlp_deploy.calibration.tensors import Runner

    out = case / "nncf.onnx"
    done = subprocess.run([python, "-c", NNCF_RUNNER, str(case / "model.onnx"), str(case / "calibration.npy"),
                           str(case / "inputs.npy"), str(case / "labels.npy"), str(out)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    inputs, labels = np.load(case / "inputs.npy"), np.load(case / "labels.npy")
    held_out = HeldOut(inputs, labels, Runner(onnx.load(str(case / "model.onnx"))).logits(inputs))
    model = onnx.load(str(out))
    logits = Runner(model).logits(inputs)
    evaluation = held_out.evaluate(logits, AccuracyBudget(max_top1_drop=BUDGET_POINTS))
    return {"top1": evaluation.value, "meets": evaluation.meets, "float_layers": float_layers(model),
            "worst_cosine": worst_cosine(logits, held_out.reference), **row}


def run_row(case: Path, row: str, target: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--row", str(case), row, target], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=float, nargs="+", default=[1, 100, 150, 250, 1000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="channel choices")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--targets", nargs="+", default=["tensorrt", "cpu"])
    parser.add_argument("--nncf-python", help="the Python of NNCF's environment; leave out to skip NNCF")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--row", nargs=3, metavar=("CASE", "ROW", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(ours(Path(args.row[0]), args.row[1], args.row[2])))
        return
    from tests.digits import write_digits

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        digits = write_digits(Path(tmp) / "digits")
        for k in args.k:
            for seed in args.seeds:
                case = Path(tmp) / f"k{k:g}-s{seed}"
                case.mkdir()
                fixture = prepare(case, k, seed, digits)
                for target in args.targets:
                    for row in args.rows:
                        results.append({**fixture, "row": row, "target": target, **run_row(case, row, target)})
                        print(json.dumps({key: v for key, v in results[-1].items() if key != "channels"}), flush=True)
                if args.nncf_python:
                    results.append({**fixture, "row": "nncf", "target": "nncf", **nncf(case, args.nncf_python)})
                    print(json.dumps({key: v for key, v in results[-1].items() if key != "channels"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
