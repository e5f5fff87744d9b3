"""INT8 on the CPU: this project's CPU form against NNCF's INT8 of the same model on OpenVINO (docs/cpu.md, "INT8 on
OpenVINO"), eager PyTorch FP32 as the baseline, everything timed interleaved in one run; and both forms' accuracy.

Speed: sMLPNet (random weights, seed 0) exported with ``model.int8.cpu.onnx`` calibrated on ``--calib-samples`` of
``--calib-dir``'s images (default: 16 of scikit-image's photos). NNCF 3.4 quantizes the same ``model.onnx`` on the
same images (``nncf.quantize``, preset performance, bias correction off: its fast bias correction fails on
sMLPNet's graph, "cannot reshape array of size 3136 into shape (56,1)") in both of its forms: the OpenVINO model
OpenVINO reads from the file (NNCF's OpenVINO backend, FakeQuantize) and a Q/DQ ONNX file (its ONNX backend). Each
INT8 model runs on the project's openvino backend (fp32 float parts, latency hint, every core); ONNX Runtime runs
the CPU form, OpenVINO bf16 runs ``model.onnx`` where the CPU has bf16. ``--previous FILE`` adds an earlier CPU form
on both runtimes. Every row's label says what its runtime computes in int8, from the runtime's own report: the
layers OpenVINO compiled (its runtime model), the ops ONNX Runtime fused (its optimized graph). Medians of
``--repeats`` interleaved rounds at each batch size.

Accuracy: the digits model (tests/digits.py) exported with the CPU form calibrated on 256 train images, NNCF's two
forms from the same 256 images: held-out top-1 and mean logit cosine against FP32. Parity: the speed export's own
check of the CPU form against PyTorch (INT8 thresholds) and, on OpenVINO, against ONNX Runtime.

NNCF runs in a virtual environment of its own, never the project's; the script makes it on first use (NNCF with
the project's OpenVINO, ONNX and ONNX Runtime versions, about 400 MB, a minute or two)::

    python docs/benchmarks/cpu_int8.py [--nncf-venv build/nncf-venv] [--previous OLD/model.int8.cpu.onnx] \\
        --json docs/benchmarks/cpu-int8-2core.json
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

NNCF = "nncf==3.4.0"
PEERS = ("openvino", "onnx", "onnxruntime")  # installed beside NNCF at the project's versions
EAGER, NNCF_OV, NNCF_ONNX = "eager PyTorch fp32", "NNCF, OpenVINO model", "NNCF, Q/DQ ONNX"
# Run inside NNCF's environment: quantize the FP32 model on the calibration images as NNCF's documentation does.
RUNNER = """
import sys, numpy as np, nncf
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
source, calibration, output, form = sys.argv[1:5]
images = np.load(calibration)
items = [images[i:i + 1] for i in range(len(images))]
options = dict(preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(items),
               advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))
if form == "openvino":
    import openvino as ov
    model = nncf.quantize(ov.Core().read_model(source), nncf.Dataset(items), **options)
    ov.save_model(model, output, compress_to_fp16=False)
else:
    import onnx
    model = onnx.load(source)
    name = model.graph.input[0].name
    onnx.save(nncf.quantize(model, nncf.Dataset(items, lambda x: {name: x}), **options), output)
"""


def nncf_python(venv: Path) -> Path:
    """The Python of NNCF's environment, made where it is missing."""
    from smlp_deploy.environment import installed_version

    python = venv / "bin" / "python"
    if not python.is_file() or subprocess.run([str(python), "-c", "import nncf"], check=False,
                                              capture_output=True).returncode:
        print(f"making {venv} for {NNCF} (a minute or two, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        specs = [NNCF, *(f"{name}=={installed_version(name)}" for name in PEERS)]
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *specs], check=True)
    return python


def nncf_forms(python: Path, fp32: Path, images: np.ndarray, out: Path) -> dict[str, Path]:
    """NNCF's INT8 of ``fp32`` calibrated on ``images``, in its OpenVINO and its ONNX form."""
    np.save(out / "calibration.npy", images)
    forms = {NNCF_OV: out / "nncf.xml", NNCF_ONNX: out / "nncf.onnx"}
    for path in forms.values():
        subprocess.run([str(python), "-c", RUNNER, str(fp32), str(out / "calibration.npy"), str(path),
                        "openvino" if path.suffix == ".xml" else "onnx"], check=True, capture_output=True)
    return forms


def openvino_report(backend) -> dict:
    """What OpenVINO compiled: each (layer type, precision) of its runtime model, counted."""
    ops = (op.get_rt_info() for op in backend.compiled.get_runtime_model().get_ops())
    counts = collections.Counter(f"{info['layerType'].astype(str)} {info['runtimePrecision'].astype(str)}"
                                 for info in ops if info["layerType"].astype(str) != "Const")
    return {"describe": backend.describe(), "runtime_layers": dict(sorted(counts.items()))}


def onnxruntime_report(path: Path, folder: Path) -> dict:
    """What ONNX Runtime runs: the op types of the graph it optimized (its QLinear/IntegerToFloat ops are int8)."""
    import onnx
    import onnxruntime as ort

    from smlp_deploy.runtime.backends.onnxruntime_backend import session_options

    options = session_options()
    options.optimized_model_filepath = str(folder / f"{path.stem}.ort-optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    int8 = {op: n for op, n in ops.items() if op.startswith(("QLinear", "QGemm", "MatMulInteger", "ConvInteger"))}
    gemms = {op: n for op, n in ops.items() if op in ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul")}
    return {"int8_ops": int8, "fp32_gemm_ops": gemms}


def label(row: str, report: dict) -> str:
    """The row's name and what its runtime computes in int8, in the runtime's words."""
    if "runtime_layers" in report:
        layers = report["runtime_layers"]
        heavy = [f"{n} {kind}" for kind, n in layers.items() if kind.split()[0] in ("Convolution", "FullyConnected",
                                                                                   "MatMul")]
        return f"{row}: {', '.join(heavy)}"
    fused = ", ".join(f"{n} {op}" for op, n in {**report["int8_ops"], **report["fp32_gemm_ops"]}.items())
    return f"{row}: {fused}"


def speed(args: argparse.Namespace, python: Path, tmp: Path) -> dict:
    import torch

    from smlp_deploy.calibration import load_calibration_set
    from smlp_deploy.cpu import openvino_cpu_capabilities
    from smlp_deploy.export import export_model
    from smlp_deploy.export.int8 import Int8Options
    from smlp_deploy.models import create_model
    from smlp_deploy.records import to_json
    from smlp_deploy.runtime import load_backend
    from smlp_deploy.runtime.backends import TorchBackend
    from smlp_deploy.runtime.backends.openvino_backend import OpenVINOBackend

    export = export_model(args.variant, precisions=("fp32", "int8"), out_dir=tmp / "export", flavours=(),
                          int8_options=Int8Options(args.calib_dir, samples=args.calib_samples, targets=("cpu",)),
                          openvino=True, quiet=True)
    fp32, cpu_form = export.out_dir / "model.onnx", export.out_dir / "model.int8.cpu.onnx"
    calib = load_calibration_set(args.calib_dir, export.manifest.preprocess, samples=args.calib_samples, quiet=True)
    nncf = nncf_forms(python, fp32, np.stack(list(calib.images())), tmp)
    torch.manual_seed(0)  # the export's weights (speed does not depend on them)
    backends = {EAGER: TorchBackend(create_model(args.variant), device="cpu"),
                "onnxruntime fp32": load_backend(fp32, "onnxruntime", device="cpu"),
                "openvino int8 (this project's CPU form)": load_backend(cpu_form, "openvino"),
                f"openvino int8 ({NNCF_OV})": OpenVINOBackend(nncf[NNCF_OV]),
                f"openvino int8 ({NNCF_ONNX})": OpenVINOBackend(nncf[NNCF_ONNX]),
                "onnxruntime int8 (this project's CPU form)": load_backend(cpu_form, "onnxruntime", device="cpu")}
    onnx_files = {"onnxruntime int8 (this project's CPU form)": cpu_form}
    if args.previous:
        backends["openvino int8 (previous CPU form)"] = OpenVINOBackend(args.previous)
        backends["onnxruntime int8 (previous CPU form)"] = load_backend(args.previous, "onnxruntime", device="cpu")
        onnx_files["onnxruntime int8 (previous CPU form)"] = args.previous
    if "BF16" in openvino_cpu_capabilities():
        backends["openvino bf16 (model.onnx)"] = load_backend(fp32, "openvino", precision="bf16")
    reports = {row: onnxruntime_report(onnx_files[row], tmp) if row in onnx_files else
               openvino_report(b) if row.startswith("openvino") else {"describe": b.describe()}
               for row, b in backends.items()}
    rounds = measure(backends, args)
    artifact = export.manifest.artifact("model.int8.cpu.onnx")
    return {"model": args.variant, "calibration": {"dir": str(args.calib_dir), "samples": len(calib)},
            "runtime": {row: {"label": label(row, r) if row.startswith(("openvino int8", "onnxruntime int8")) else row,
                              **r} for row, r in reports.items()},
            "rounds": rounds, "summary": summarize(rounds),
            "parity": {"against pytorch": to_json(artifact.parity), "thresholds": "int8",
                       "on openvino": to_json(artifact.backends)}}


def measure(backends: dict, args: argparse.Namespace) -> list[dict]:
    """p50 of every row, interleaved, at each batch size, ``args.repeats`` times."""
    from smlp_deploy.bench.timing import measure_interleaved

    rounds = []
    for repeat in range(args.repeats):
        for batch in args.batch_sizes:
            x = np.random.default_rng(0).standard_normal((batch, 3, args.image_size, args.image_size), np.float32)
            calls = {row: (lambda b=b, x=x: b.run(x)) for row, b in backends.items()}
            start = time.perf_counter()
            latency = {row: t.summary() for row, t in measure_interleaved(calls, duration_s=args.duration).items()}
            rounds.append({"repeat": repeat, "batch": batch, "seconds": round(time.perf_counter() - start, 1),
                           "loadavg": os.getloadavg()[0], "p50_ms": {r: s.p50 for r, s in latency.items()},
                           "p90_ms": {r: s.p90 for r, s in latency.items()}, "n": {r: s.n for r, s in latency.items()}})
            print(f"repeat {repeat + 1}/{args.repeats}, batch {batch}: " + ", ".join(
                f"{r} {s.p50:.1f} ms" for r, s in latency.items()), flush=True)
    return rounds


def summarize(rounds: list[dict]) -> dict:
    """Per batch size and row: median p50, and the medians over repeats of its speed-up over eager FP32 and, for
    OpenVINO's int8 rows, of its speed against the faster NNCF form in the same round."""
    summary = {}
    for batch in sorted({r["batch"] for r in rounds}):
        mine = [r["p50_ms"] for r in rounds if r["batch"] == batch]
        nncf = [min(p[f"openvino int8 ({NNCF_OV})"], p[f"openvino int8 ({NNCF_ONNX})"]) for p in mine]
        summary[batch] = {row: {"p50_ms": statistics.median(p[row] for p in mine),
                                "x_eager": statistics.median(p[EAGER] / p[row] for p in mine),
                                **({"x_nncf": statistics.median(n / p[row] for p, n in zip(mine, nncf, strict=True))}
                                   if row.startswith("openvino int8") else {})}
                          for row in mine[0]}
    return summary


def accuracy(python: Path, tmp: Path) -> list[dict]:
    """Held-out top-1 and mean logit cosine against FP32 of the CPU form and NNCF's forms, same 256 images."""
    from smlp_deploy.calibration import load_calibration_set
    from smlp_deploy.export import export_model
    from smlp_deploy.export.int8 import Int8Options
    from smlp_deploy.runtime import load_backend
    from smlp_deploy.runtime.backends.openvino_backend import OpenVINOBackend
    from tests.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, _scores, load_split, write_digits

    splits = write_digits(tmp / "digits")
    export = export_model("test", checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                          precisions=("fp32", "int8"), out_dir=tmp / "digits-export", flavours=(), quiet=True,
                          int8_options=Int8Options(splits["train"], targets=("cpu",)))
    fp32, cpu_form = export.out_dir / "model.onnx", export.out_dir / "model.int8.cpu.onnx"
    calib = load_calibration_set(splits["train"], export.manifest.preprocess, quiet=True)  # the export's 256
    (tmp / "digits-nncf").mkdir()
    nncf = nncf_forms(python, fp32, np.stack(list(calib.images())), tmp / "digits-nncf")
    inputs, labels = load_split(splits["test"])
    reference = load_backend(fp32, "onnxruntime", device="cpu").run(inputs)
    runs = [("this project's CPU form", "openvino", lambda: load_backend(cpu_form, "openvino")),
            ("this project's CPU form", "onnxruntime", lambda: load_backend(cpu_form, "onnxruntime", device="cpu")),
            (NNCF_OV, "openvino", lambda: OpenVINOBackend(nncf[NNCF_OV])),
            (NNCF_ONNX, "openvino", lambda: OpenVINOBackend(nncf[NNCF_ONNX])),
            (NNCF_ONNX, "onnxruntime", lambda: load_backend(nncf[NNCF_ONNX], "onnxruntime", device="cpu"))]
    rows = []
    for form, runtime, load in runs:
        scores = _scores("x", load().run(inputs), reference, labels)
        rows.append({"form": form, "runtime": runtime, "calibration_images": len(calib),
                     "top1": scores["x top-1"], "cosine": scores["x cosine"]})
    return rows


def main() -> None:
    import skimage

    from smlp_deploy.cpu import cpu_features, openvino_cpu_capabilities
    from smlp_deploy.environment import capture
    from smlp_deploy.fileio import write_json_atomic
    from smlp_deploy.progress import format_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--calib-dir", type=Path, default=Path(skimage.__file__).parent / "data")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of timed calls per row and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--previous", type=Path, help="an earlier model.int8.cpu.onnx, timed on both runtimes")
    parser.add_argument("--nncf-venv", type=Path, default=ROOT / "build" / "nncf-venv")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the digits accuracy")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    environment = {**capture(), "cpu_features": cpu_features(), "openvino_capabilities": openvino_cpu_capabilities(),
                   "loadavg_before": os.getloadavg()}
    python = nncf_python(args.nncf_venv)
    with tempfile.TemporaryDirectory(prefix="cpu-int8-") as folder:
        results = {"speed": speed(args, python, Path(folder))}
        results["accuracy"] = [] if args.no_accuracy else accuracy(python, Path(folder))
    environment["loadavg_after"] = os.getloadavg()

    summary = results["speed"]["summary"]
    rows = [[row, *(f"{summary[b][row]['p50_ms']:.1f}" for b in summary),
             *(f"{summary[b][row]['x_eager']:.2f}x" for b in summary),
             *(f"{summary[b][row]['x_nncf']:.2f}x" if "x_nncf" in summary[b][row] else "" for b in summary)]
            for row in next(iter(summary.values()))]
    print(format_table(["path", *(f"b{b} p50 ms" for b in summary), *(f"b{b} vs eager" for b in summary),
                        *(f"b{b} vs NNCF" for b in summary)], rows))
    for report in results["speed"]["runtime"].values():
        print(f"  {report['label']}")
    for row in results["accuracy"]:
        print(f"  digits, {row['form']} on {row['runtime']}: top-1 {row['top1']:.4f}, cosine {row['cosine']:.6f}")
    print(f"load average {environment['loadavg_before'][0]:.1f} before, {environment['loadavg_after'][0]:.1f} after")
    if args.json:
        write_json_atomic(args.json, {"command": " ".join(sys.argv), "environment": environment, **results})


if __name__ == "__main__":
    main()
