"""INT8 calibration: an image-folder calibration set streamed through the float model, a collector of activation
statistics, calibration methods and their cache, Q/DQ quantization."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .budget import AccuracyBudget, Evaluation, HeldOut
    from .cache import CacheLookup, cache_key, check_cache_file, read_cache, write_cache
    from .collector import Extremes, Histogram
    from .dataset import DEFAULT_SAMPLES, CalibrationSet, load_calibration_set
    from .entropy import entropy_threshold, kl_divergences
    from .methods import DEFAULT_METHOD, METHODS, Method, Ranges, compute_ranges, get_method
    from .quantize import QUANTIZED_OPS, TARGETS, Target, calibrated_tensors, quantize_qdq
