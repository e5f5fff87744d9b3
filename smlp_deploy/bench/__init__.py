"""smlp-bench: latency and throughput across backends, precisions and batch sizes, against eager PyTorch; and
smlp-compare: which precision to ship, accuracy against throughput."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .choice import PrecisionReport, compare_precisions, plot_choice
    from .report import format_report, write_csv, write_json, write_plot
    from .results import BenchReport, BenchRow
    from .runner import BenchConfig, run_benchmark
