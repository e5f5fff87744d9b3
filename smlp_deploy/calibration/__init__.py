"""INT8 calibration: an image-folder calibration set, calibration methods and their cache, Q/DQ quantization."""

from .cache import CacheLookup, cache_key, check_cache_file, read_cache, write_cache
from .dataset import DEFAULT_SAMPLES, CalibrationSet, load_calibration_set
from .methods import DEFAULT_METHOD, METHODS, QUANTIZED_OPS, Method, compute_ranges, get_method
from .quantize import TARGETS, Target, quantize_qdq

__all__ = [
    "CacheLookup", "CalibrationSet", "DEFAULT_METHOD", "DEFAULT_SAMPLES", "METHODS", "Method", "QUANTIZED_OPS",
    "TARGETS", "Target", "cache_key", "check_cache_file", "compute_ranges", "get_method", "load_calibration_set",
    "quantize_qdq", "read_cache", "write_cache",
]
