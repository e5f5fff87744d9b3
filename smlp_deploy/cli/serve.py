"""smlp-serve: serve an export with a local Triton server until Ctrl-C (or SIGTERM).

The server is the tritonserver in nvidia-pytriton's wheel (CPU, Python backend): the artifact runs through
smlp_deploy.Classifier in this environment, and encoded images go through the export's own preprocessing.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import NoReturn

from ..artifacts import ARTIFACTS
from ..environment import find_tritonserver
from ..runtime.backends.registry import BACKENDS, PRECISION_CHOICES
from ..serving.repository import TritonRepository, write_triton_repository
from ..serving.server import LocalTritonServer
from .common import positive_int, run_main
from .requires import require_backend

FLAGS = {"export_dir": "EXPORT_DIR", "name": "--name", "artifact": "--artifact", "instances": "--instances",
         "max_batch_size": "--max-batch-size", "max_queue_delay_us": "--max-queue-delay-us",
         "classifier_backend": "--backend", "precision": "--precision"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir", type=Path, help="an export folder (smlp-export --out)")
    p.add_argument("--artifact", default="model.onnx", choices=list(ARTIFACTS), help="default: model.onnx")
    p.add_argument("--name", help="model name (default: the model's, e.g. smlpnet_tiny)")
    p.add_argument("--backend", choices=list(BACKENDS), help="the backend that opens the artifact (default: its own)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="what OpenVINO computes in (--backend openvino): "
                   "fp32 (default) or bf16")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8000, help="0 picks a free port (default: 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="default: 8001")
    p.add_argument("--metrics-port", type=int, default=8002, help="default: 8002")
    p.add_argument("--instances", type=positive_int, default=1, help="model instances, one process each (default: 1)")
    p.add_argument("--max-batch-size", type=positive_int, help="default: 32")
    p.add_argument("--max-queue-delay-us", type=int, default=0, help="dynamic batcher delay (default: 0)")
    p.add_argument("--log", type=Path, help="write the server's log here (default: a temporary file)")
    return p


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    find_tritonserver()  # the server, and the backend its models run, before the repository is written
    require_backend("classifier_backend", args.backend)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # a service manager's stop is a Ctrl-C here
    try:
        with tempfile.TemporaryDirectory(prefix="smlp-serve-") as scratch:
            repository = write_triton_repository(
                args.export_dir, Path(scratch) / "repository", name=args.name, artifact=args.artifact,
                backend="python", classifier_backend=args.backend, precision=args.precision,
                instances=args.instances, max_batch_size=args.max_batch_size,
                max_queue_delay_us=args.max_queue_delay_us)
            print(f"starting tritonserver for {args.export_dir / args.artifact} ...", file=sys.stderr, flush=True)
            server = LocalTritonServer(repository.path, host=args.host, http_port=args.http_port,
                                       grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_file=args.log)
            with server:
                _announce(server, repository)
                try:
                    status = server.wait()
                except KeyboardInterrupt:
                    print("stopping ...", file=sys.stderr, flush=True)
                    server.stop()
                    print("stopped", file=sys.stderr, flush=True)
                    return 0
                print(f"error: tritonserver exited with status {status}:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _announce(server: LocalTritonServer, repository: TritonRepository) -> None:
    classifier, image = repository.classifier, repository.image_model
    size = classifier.config.inputs[0].dims
    images = f"        {image.name}: image UINT8 [-1] (encoded JPEG/PNG bytes) -> logits\n" if image else ""
    print(f"HTTP    http://{server.http_url}\ngRPC    {server.grpc_url}\nmetrics {server.metrics_url}\n"
          f"models  {classifier.name}: input FP32 {list(size)} -> logits (labels: class_count)\n{images}"
          "Ctrl-C stops the server.", flush=True)


entry_point = run_main(main, FLAGS)
