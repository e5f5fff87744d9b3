"""INT8 calibration: an image-folder calibration set, calibration methods and their cache, Q/DQ quantization."""

from typing import TYPE_CHECKING

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, __file__)

if TYPE_CHECKING:
    from .cache import CacheLookup, cache_key, check_cache_file, read_cache, write_cache
    from .dataset import DEFAULT_SAMPLES, CalibrationSet, load_calibration_set
    from .methods import DEFAULT_METHOD, METHODS, QUANTIZED_OPS, Method, compute_ranges, get_method
    from .quantize import TARGETS, Target, quantize_qdq
