"""smlp-deploy: ship sMLPNet image classifiers to NVIDIA GPUs (ONNX, FP16/INT8 TensorRT engines, a runtime)."""

__version__ = "0.1.0"
