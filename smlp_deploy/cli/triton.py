"""smlp-triton: write a Triton Inference Server model repository for one artifact of an export."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..artifacts import ARTIFACTS
from ..progress import format_table
from ..runtime.backends.registry import BACKENDS, PRECISION_CHOICES
from ..serving.repository import TritonRepository, write_triton_repository
from .common import positive_int, run_main

FLAGS = {"export_dir": "EXPORT_DIR", "name": "--name", "artifact": "--artifact", "backend": "--backend",
         "device": "--device", "tensorrt_accelerator": "--tensorrt-accelerator", "instances": "--instances",
         "max_batch_size": "--max-batch-size", "max_queue_delay_us": "--max-queue-delay-us",
         "overwrite": "--overwrite", "classifier_backend": "--classifier-backend", "precision": "--precision"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smlp-triton", description=__doc__,
        epilog="Serve it with `tritonserver --model-repository REPO` (on a GPU host, NVIDIA's tritonserver "
               "container), or here with smlp-serve.")
    p.add_argument("export_dir", type=Path, help="an export folder (smlp-export --out)")
    p.add_argument("--out", type=Path, required=True, help="the model repository to write the models into")
    p.add_argument("--name", help="model name (default: the model's, e.g. smlpnet_tiny)")
    p.add_argument("--artifact", default="model.onnx", choices=list(ARTIFACTS),
                   help="the file to serve (default: model.onnx)")
    p.add_argument("--backend", choices=["python", "openvino"],
                   help="python: serve through smlp_deploy.Classifier in Triton's Python backend instead of the "
                        "artifact's own backend (TensorRT or ONNX Runtime); openvino: an ONNX file on Triton's "
                        "OpenVINO backend, on the CPU, with --precision bf16")
    p.add_argument("--classifier-backend", choices=list(BACKENDS),
                   help="with --backend python: the smlp-deploy backend that opens the artifact (default: its own)")
    p.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="with --backend openvino (bf16 only: that backend cannot pin FP32), or --backend python "
                        "--classifier-backend openvino: what OpenVINO computes in")
    p.add_argument("--device", choices=["cpu", "gpu"], help="where ONNX models run (default: cpu; engines: gpu)")
    p.add_argument("--tensorrt-accelerator", action="store_true",
                   help="ONNX on a GPU: let ONNX Runtime hand the model to TensorRT at the artifact's precision")
    p.add_argument("--instances", type=positive_int, default=1, help="model instances (default: 1)")
    p.add_argument("--max-batch-size", type=positive_int,
                   help="default: the engine profile's max; 32 for ONNX files")
    p.add_argument("--max-queue-delay-us", type=int, default=0,
                   help="how long the dynamic batcher may wait to form a batch (default: 0)")
    p.add_argument("--no-image-input", dest="image_input", action="store_false",
                   help="leave out the models that take encoded images (NAME_preprocess and the ensemble NAME_image)")
    p.add_argument("--overwrite", action="store_true", help="replace model folders of the same names")
    return p


def summary(repository: TritonRepository) -> str:
    rows = [[m.name, m.runtime, m.config.max_batch_size,
             f"{m.config.instance_group.count} x {m.config.instance_group.kind}" if m.config.instance_group else "-",
             ", ".join(f"{t.name} {list(t.dims)}" for t in m.config.inputs)] for m in repository.models]
    lines = [format_table(["model", "runs on", "max batch", "instances", "input"], rows), "",
             f"{repository.path}: {repository.artifact} (sha256 {repository.sha256[:16]}...)",
             f"serve it: tritonserver --model-repository {repository.path}"]
    if repository.needs_smlp_deploy:
        lines.append("its Python-backend models import smlp_deploy: install smlp-deploy in the server's Python")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    repository = write_triton_repository(
        args.export_dir, args.out, name=args.name, artifact=args.artifact, backend=args.backend, device=args.device,
        classifier_backend=args.classifier_backend, precision=args.precision,
        tensorrt_accelerator=args.tensorrt_accelerator, instances=args.instances, max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us, image_input=args.image_input, overwrite=args.overwrite)
    print(summary(repository))
    return 0


entry_point = run_main(main, FLAGS)
