"""The digits model as a test fixture: its held-out split through the runtime's preprocessing, its training, and
the comparisons behind the calibration defaults.

Quantization accuracy cannot be judged on random weights, and ImageNet weights cannot be downloaded here. So
scikit-learn's bundled handwritten digits are written as PNGs (``smlp_deploy.samples.digits``, which also ships the
trained checkpoint) and the ``test`` variant is trained on the train split through the toolkit's own preprocessing.

Reproduce the shipped checkpoint (about a minute on 2 cores)::

    .venv/bin/python -m tests.digits --train smlp_deploy/samples/smlpnet_digits.pth
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smlp_deploy.samples.digits import CHECKPOINT, IMAGE_SIZE, NUM_CLASSES, write_digits

if TYPE_CHECKING:
    from smlp_deploy.calibration import CalibrationSet

def load_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A split folder through the runtime's preprocessing -> (inputs [N, 3, 64, 64], labels [N])."""
    from smlp_deploy.models import PreprocessConfig
    from smlp_deploy.runtime import Preprocessor

    files = sorted(folder.glob("*/*.png"))
    inputs = Preprocessor(PreprocessConfig.for_image_size(IMAGE_SIZE)).batch(files)
    return inputs, np.array([int(f.parent.name) for f in files])


def train(out: Path, epochs: int = 40, seed: int = 0) -> float:
    """Train the ``test`` variant on the train split and save its state dict; returns held-out top-1."""
    import tempfile

    import torch

    from smlp_deploy.models import create_model

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_digits(Path(tmp))
        x_train, y_train = (torch.from_numpy(a) for a in load_split(folders["train"]))
        x_test, y_test = (torch.from_numpy(a) for a in load_split(folders["test"]))
    model = create_model("test", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps_per_epoch = -(-len(x_train) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            # Shifts of up to 4 pixels: the digits are centred, the test split's are too, but not exactly.
            dx, dy = torch.randint(-4, 5, (2,)).tolist()
            inputs = torch.roll(x_train[batch], shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(inputs), y_train[batch], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    model.eval()
    with torch.inference_mode():
        top1 = float((model(x_test).argmax(1) == y_test).float().mean())
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return top1


@contextmanager
def _held_out_setup(samples: int) -> Iterator[tuple[Path, Path, CalibrationSet, list[str], np.ndarray, np.ndarray,
                                                   np.ndarray]]:
    """In a temporary folder: the fixture's FP32 export, ``samples`` calibration images from the train split, the
    tensors both INT8 forms need ranges for, and the held-out inputs, labels and FP32 logits -> (folder,
    model.onnx, calibration set, tensors, inputs, labels, logits)."""
    import tempfile

    import onnx

    from smlp_deploy.calibration import TARGETS, calibrated_tensors, load_calibration_set
    from smlp_deploy.export import export_model
    from smlp_deploy.runtime.backends import OnnxRuntimeBackend

    with tempfile.TemporaryDirectory() as tmp:
        folders = write_digits(Path(tmp) / "digits")
        export = export_model("test", checkpoint=CHECKPOINT, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                              out_dir=Path(tmp) / "export", quiet=True)
        fp32_path = export.out_dir / "model.onnx"
        calib = load_calibration_set(folders["train"], export.manifest.preprocess, samples=samples, quiet=True)
        tensors = calibrated_tensors(onnx.load(str(fp32_path)), TARGETS)  # both forms: every range either needs
        inputs, labels = load_split(folders["test"])
        reference = OnnxRuntimeBackend(fp32_path, device="cpu").run(inputs)
        yield Path(tmp), fp32_path, calib, tensors, inputs, labels, reference


def compare_calibration(samples: int = 256) -> list[dict]:
    """Every calibration method on the fixture: its time and each INT8 form's held-out top-1 and logit cosine
    against FP32 (the table behind the default method in docs/calibration.md)."""
    import time

    import onnx

    from smlp_deploy.calibration import METHODS, TARGETS, compute_ranges, quantize_qdq
    from smlp_deploy.runtime.backends import OnnxRuntimeBackend

    with _held_out_setup(samples) as (tmp, fp32_path, calibration, tensors, inputs, labels, reference):
        rows = [{"method": "fp32", "seconds": 0.0, **_scores("fp32", reference, reference, labels)}]
        for method in METHODS.values():
            start = time.perf_counter()
            ranges = compute_ranges(fp32_path, calibration, method, tensors, quiet=True)
            row = {"method": method.name, "seconds": time.perf_counter() - start}
            for target in TARGETS.values():
                path = tmp / f"{method.name}.{target.artifact.file_name}"
                onnx.save(quantize_qdq(fp32_path, ranges, target), str(path))
                logits = OnnxRuntimeBackend(path, device="cpu").run(inputs)
                row.update(_scores(target.name, logits, reference, labels))
            rows.append(row)
    return rows


def compare_left_weights(samples: int = 256) -> list[dict]:
    """The TensorRT form with the ``W @ x`` MatMul weights scaled per tensor (shipped: TensorRT documents
    per-channel MatMul weights only as the second operand) against per channel on axis 0 (the earlier form), with
    fp32 and fp16 float parts: held-out top-1 and logit cosine against FP32 (the figures behind the choice)."""
    import dataclasses

    from smlp_deploy.calibration import TARGETS, compute_ranges, get_method, quantize_qdq

    rows = []
    with _held_out_setup(samples) as (tmp, fp32_path, calibration, tensors, inputs, labels, reference):
        method = get_method("percentile")
        ranges = compute_ranges(fp32_path, calibration, method, tensors, quiet=True)
        shipped = TARGETS["tensorrt"]
        for name, target in (("per tensor", shipped),
                             ("per channel", dataclasses.replace(shipped, per_channel_left_weights=True))):
            model = quantize_qdq(fp32_path, ranges, target)
            rows.append({"W @ x weights": name, **_float_parts_scores(tmp / name, model, inputs, reference, labels)})
    return rows


def compare_fp8(samples: int = 256) -> list[dict]:
    """The FP8 form with each FP8 calibration method, and the INT8 TensorRT form (percentile, its default) beside
    it, with fp32 and fp16 float parts: calibration time (of the tensors each form needs), held-out top-1 and mean
    logit cosine against FP32 (the figures behind FP8's default method and docs/calibration.md's precision table)."""
    import time

    import onnx

    from smlp_deploy.calibration import TARGETS, compute_ranges, get_method, quantize_qdq
    from smlp_deploy.calibration.fp8 import METHODS, fp8_calibrated_tensors, quantize_fp8

    rows = []
    with _held_out_setup(samples) as (tmp, fp32_path, calibration, _, inputs, labels, reference):
        float_model = onnx.load(str(fp32_path))
        forms = [(f"fp8 {name}", get_method(name), fp8_calibrated_tensors(float_model),
                  lambda ranges: quantize_fp8(fp32_path, ranges)) for name in METHODS]
        forms.append(("int8 percentile", get_method("percentile"), TARGETS["tensorrt"].calibrated_tensors(float_model),
                      lambda ranges: quantize_qdq(fp32_path, ranges, TARGETS["tensorrt"])))
        for name, method, tensors, quantize in forms:
            start = time.perf_counter()
            ranges = compute_ranges(fp32_path, calibration, method, tensors, quiet=True)
            row = {"form": name, "tensors": len(tensors), "seconds": time.perf_counter() - start}
            row.update(_float_parts_scores(tmp / name.replace(" ", "-"), quantize(ranges), inputs, reference, labels))
            rows.append(row)
    return rows


def _float_parts_scores(stem: Path, model, inputs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Held-out top-1 and logit cosine of the Q/DQ ``model`` with fp32 float parts and with fp16 ones (saved as
    ``stem.fp32.onnx`` and ``stem.fp16.onnx``)."""
    import onnx

    from smlp_deploy.export.precision import convert_to_fp16
    from smlp_deploy.runtime.backends import OnnxRuntimeBackend

    row = {}
    for parts, form in (("fp32", model), ("fp16", convert_to_fp16(model))):
        path = stem.with_name(f"{stem.name}.{parts}.onnx")
        onnx.save(form, str(path))
        row.update(_scores(f"{parts} parts", OnnxRuntimeBackend(path, device="cpu").run(inputs), reference, labels))
    return row


def _scores(name: str, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    cosine = np.sum(logits * reference, 1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(reference, axis=1)
    return {f"{name} top-1": float(np.mean(logits.argmax(1) == labels)), f"{name} cosine": float(cosine.mean())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, metavar="OUT", help="train the fixture and save it to OUT")
    parser.add_argument("--compare-calibration", action="store_true",
                        help="print every calibration method's time and INT8 accuracy on the held-out split")
    parser.add_argument("--compare-left-weights", action="store_true",
                        help="print the TensorRT form's accuracy with the W @ x weights per tensor and per channel")
    parser.add_argument("--compare-fp8", action="store_true",
                        help="print the FP8 form's accuracy with each FP8 calibration method, beside INT8's")
    args = parser.parse_args()
    for wanted, compare in ((args.compare_calibration, compare_calibration),
                            (args.compare_left_weights, compare_left_weights), (args.compare_fp8, compare_fp8)):
        for row in compare() if wanted else []:
            print("  ".join(f"{k}={v:.6f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if args.train:
        print(f"held-out top-1: {train(args.train):.4f}")
