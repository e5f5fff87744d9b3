"""smlp-bench: latency and throughput across backends, precisions and batch sizes, against eager PyTorch."""

from .report import format_report, write_csv, write_json, write_plot
from .runner import BenchConfig, BenchReport, run_benchmark

__all__ = ["BenchConfig", "BenchReport", "format_report", "run_benchmark", "write_csv", "write_json", "write_plot"]
