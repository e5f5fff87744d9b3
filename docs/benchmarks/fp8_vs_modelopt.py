"""This project's FP8 (and INT8) Q/DQ models against NVIDIA's TensorRT Model Optimizer on the digits fixture.

The same FP32 model (the ``test`` variant trained on the digits, ``smlp_deploy/samples/smlpnet_digits.pth``, at 64 px),
the same 256 calibration images (drawn from the train split as ``smlp-export`` draws them, seed 0, through the
export's own preprocessing), and the same 450 held-out images: each quantized model's held-out top-1 and its mean
logit cosine against FP32, all run by ONNX Runtime's CPU provider, with fp32 float parts (the fixture's setting)
and fp16 ones (what TensorRT runs, and ModelOpt's default).

ModelOpt (``nvidia-modelopt[onnx]``) runs in a virtual environment of its own, never in the project's: its
``[onnx]`` extra installs onnxruntime-gpu, which shadows the onnxruntime module, and a CUDA torch unless a CPU
one is there first. The script makes that environment on first use (about 2 GB with the CPU torch, a few
minutes), then runs ModelOpt's ONNX post-training quantization on the CPU (``calibration_eps=["cpu"]``)::

    .venv/bin/python docs/benchmarks/fp8_vs_modelopt.py [--modelopt-venv build/modelopt-venv] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELOPT = "nvidia-modelopt[onnx]==0.47.0"
CPU_TORCH = "torch==2.13.0"  # the project's CPU build, installed first so ModelOpt's torch>=2.8 is met without CUDA
SAMPLES = 256
# Run inside ModelOpt's environment: quantize the FP32 model with the calibration batch, as ModelOpt's own
# command line does (python -m modelopt.onnx.quantization), on the CPU.
RUNNER = """
import sys, time, numpy as np
from modelopt.onnx.quantization import quantize
onnx_path, calibration, output, mode, method, dtype = sys.argv[1:7]
start = time.perf_counter()
quantize(onnx_path, quantize_mode=mode, calibration_data=np.load(calibration), calibration_eps=["cpu"],
         calibration_method=None if method == "default" else method, high_precision_dtype=dtype,
         output_path=output, log_level="ERROR")
print(time.perf_counter() - start)
"""


def modelopt_python(venv: Path) -> Path:
    """The Python of ModelOpt's environment, made (CPU torch first, then ModelOpt) where it is missing."""
    python = venv / "bin" / "python"
    if not python.is_file() or subprocess.run([str(python), "-c", "import modelopt.onnx.quantization"],
                                              capture_output=True, check=False).returncode:
        print(f"making {venv} for {MODELOPT} (a few minutes, once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for spec in (CPU_TORCH, MODELOPT):
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", spec], check=True)
    return python


def run_modelopt(python: Path, fp32: Path, calibration: Path, out: Path, mode: str, method: str,
                 dtype: str) -> float:
    done = subprocess.run([str(python), "-c", RUNNER, str(fp32), str(calibration), str(out), mode, method, dtype],
                          check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modelopt-venv", type=Path, default=ROOT / "build" / "modelopt-venv")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()

    import onnx

    from smlp_deploy.calibration import TARGETS, compute_ranges, get_method, load_calibration_set, quantize_qdq
    from smlp_deploy.calibration.fp8 import fp8_calibrated_tensors, quantize_fp8
    from smlp_deploy.calibration.options import FP8_DEFAULT_METHOD as FP8_METHOD
    from smlp_deploy.export import export_model
    from smlp_deploy.export.precision import convert_to_fp16
    from smlp_deploy.runtime.backends import OnnxRuntimeBackend
    from tests.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, _scores, load_split, write_digits

    python = modelopt_python(args.modelopt_venv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fp8-vs-modelopt-") as folder:
        tmp = Path(folder)
        splits = write_digits(tmp / "digits")
        export = export_model("test", checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                              out_dir=tmp / "export", flavours=(), quiet=True)
        fp32 = export.out_dir / "model.onnx"
        calib = load_calibration_set(splits["train"], export.manifest.preprocess, samples=SAMPLES, quiet=True)
        np.save(tmp / "calibration.npy", np.stack(list(calib.images())))
        inputs, labels = load_split(splits["test"])
        reference = OnnxRuntimeBackend(fp32, device="cpu").run(inputs)
        float_model = onnx.load(str(fp32))

        def score(name: str, method: str, parts: str, path: Path, seconds: float) -> None:
            logits = OnnxRuntimeBackend(path, device="cpu").run(inputs)
            found = _scores("x", logits, reference, labels)
            rows.append({"artifact": name, "calibration": method, "float parts": parts, "seconds": round(seconds, 2),
                         "top1": found["x top-1"], "cosine": found["x cosine"]})
            print(rows[-1], flush=True)

        score("FP32", "-", "fp32", fp32, 0.0)
        ours = [("smlp-deploy FP8", FP8_METHOD, fp8_calibrated_tensors(float_model),
                 lambda ranges: quantize_fp8(fp32, ranges)),
                ("smlp-deploy INT8 (TensorRT form)", "percentile", TARGETS["tensorrt"].calibrated_tensors(float_model),
                 lambda ranges: quantize_qdq(fp32, ranges, TARGETS["tensorrt"]))]
        for name, method, tensors, quantize in ours:
            start = time.perf_counter()
            model = quantize(compute_ranges(fp32, calib, get_method(method), tensors, quiet=True))
            seconds = time.perf_counter() - start
            for parts, form in (("fp32", model), ("fp16", convert_to_fp16(model))):
                path = tmp / f"ours-{name.split()[1]}-{parts}.onnx"
                onnx.save(form, str(path))
                score(name, method, parts, path, seconds)
        for mode, method in (("fp8", "default"), ("fp8", "max"), ("int8", "default")):
            for dtype in ("fp32", "fp16"):
                path = tmp / f"modelopt-{mode}-{method}-{dtype}.onnx"
                seconds = run_modelopt(python, fp32, tmp / "calibration.npy", path, mode, method, dtype)
                score(f"ModelOpt {mode.upper()}", "entropy (its default)" if method == "default" else method,
                      dtype, path, seconds)
    print("\n| artifact | calibration | float parts | held-out top-1 | mean logit cosine vs FP32 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['artifact']} | {row['calibration']} | {row['float parts']} | {row['top1']:.2%} | "
              f"{row['cosine']:.6f} | {row['seconds']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
