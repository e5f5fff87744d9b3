"""Activation outlier smoothing (the SmoothQuant idea, Xiao et al., ICML 2023) on the float ONNX model, before it
is calibrated and quantized.

A per-channel affine normalization followed by a linear layer has a scale symmetry: dividing channel ``c`` of the
normalization's weight and bias by ``s_c`` and multiplying input channel ``c`` of the linear layer's weight by
``s_c`` leaves the function as it was (exact up to float rounding). Outlier channels of the activation, which
stretch its per-tensor INT8 scale and leave the other channels a few levels, can so be moved into the weights,
which are quantized per output channel. With ``s_c = max|x_c|^alpha / max|w_c|^(1 - alpha)`` (SmoothQuant's
migration strength ``alpha``) the activation's channels are evened out and the weights take what they can.

Where it applies in sMLPNet's graph: LayerNormalization -> MatMul (each channel MLP's norm -> fc1) and
BatchNormalization -> ReduceMean -> Gemm (the head). The token-mixing branches have GELU between their
BatchNorm and their linear maps, and residual additions feed the downsampling convolutions, so no per-channel
scale can move there.

``alpha`` is chosen per site, from the calibration images' own activations: each candidate (and no smoothing at
all) is scored by the relative error of the site's matrix product with its activation quantized per tensor and
its weight per output channel (INT8, symmetric), and the best is kept; a site is changed only where that error
falls by ``MIN_GAIN``, so a model without outliers is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import onnx
from onnx import numpy_helper

from .dataset import CalibrationSet
from .forward import Activations

ALPHAS = (0.25, 0.5, 0.75, 1.0)
# A site is smoothed only where the best alpha cuts the error of its quantized product by this factor or more.
MIN_GAIN = 0.5
SAMPLE_ROWS = 8192  # activation rows (tokens) per site kept to score the alphas
SAMPLE_IMAGES = 64


@dataclass(frozen=True)
class SmoothingSite:
    """A normalization whose per-channel scale can move into the linear layer its output feeds."""

    norm: str  # the LayerNormalization or BatchNormalization node
    linear: str  # the MatMul or Gemm node
    tensor: str  # the linear layer's activation input: channels on its last axis
    norm_scale: str  # initializers: the normalization's weight and bias, the linear layer's weight
    norm_bias: str
    weight: str
    weight_axis: int  # the weight's input-channel axis


@dataclass(frozen=True)
class SmoothingRecord:
    """What smoothing did at one site: ``alpha`` None where it was left as it was."""

    linear: str
    tensor: str
    alpha: float | None
    spread_before: float  # largest over median channel maximum of the activation
    spread_after: float
    error_before: float  # relative error of the quantized product
    error_after: float


def smoothing_sites(model: onnx.ModelProto) -> list[SmoothingSite]:
    """Every place of ``model`` where smoothing applies, in graph order: a LayerNormalization over the last axis,
    or a BatchNormalization followed by a ReduceMean that keeps its channels, whose output feeds only a MatMul or
    Gemm with a constant weight that nothing else reads."""
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_consumer(tensor: str) -> onnx.NodeProto | None:
        found = consumers.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in outputs else None

    sites = []
    for norm in graph.node:
        if norm.op_type not in ("LayerNormalization", "BatchNormalization") or not _per_channel(norm, constants):
            continue
        tensor, linear = norm.output[0], only_consumer(norm.output[0])
        if norm.op_type == "BatchNormalization":  # channels on axis 1: a spatial mean brings them last
            if linear is None or linear.op_type != "ReduceMean" or not _keeps_channels_last(linear, constants):
                continue
            tensor, linear = linear.output[0], only_consumer(linear.output[0])
        if linear is None or linear.op_type not in ("MatMul", "Gemm") or linear.input[0] != tensor:
            continue
        weight = linear.input[1]
        axis = _weight_input_axis(linear)
        if weight not in constants or axis is None or any(len(consumers[n]) != 1 for n in (weight, *norm.input[1:3])):
            continue
        sites.append(SmoothingSite(norm.name, linear.name, tensor, norm.input[1], norm.input[2], weight, axis))
    return sites


def _per_channel(norm: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    if len(norm.input) < 3 or any(name not in constants for name in norm.input[1:3]):
        return False
    if norm.op_type == "LayerNormalization":
        axis = next((a.i for a in norm.attribute if a.name == "axis"), -1)
        return axis == -1 and len(constants[norm.input[1]].dims) == 1
    return True


def _keeps_channels_last(reduce: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """A ReduceMean over the spatial axes (2, 3) of NCHW without keepdims: [N, C] comes out."""
    keepdims = next((a.i for a in reduce.attribute if a.name == "keepdims"), 1)
    if keepdims or len(reduce.input) < 2 or reduce.input[1] not in constants:
        return False
    return sorted(numpy_helper.to_array(constants[reduce.input[1]]).tolist()) == [2, 3]


def _weight_input_axis(linear: onnx.NodeProto) -> int | None:
    """The axis of the weight that meets the activation's channels: MatMul's ``x @ W`` row, Gemm's B column with
    ``transB``; None for a Gemm that transposes its activation."""
    if linear.op_type == "MatMul":
        return 0
    attributes = {a.name: a.i for a in linear.attribute}
    return None if attributes.get("transA", 0) else 1 if attributes.get("transB", 0) else 0


def channel_maxima(model_path: str, calib: CalibrationSet, sites: Sequence[SmoothingSite], *,
                   batch_size: int = 16) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One pass of the calibration images through the float model: for each site's activation, the largest
    magnitude of every channel over all images, and a sample of its rows (the first ``SAMPLE_IMAGES`` images',
    at most ``SAMPLE_ROWS``) to score the alphas on."""
    tensors = [site.tensor for site in sites]
    activations = Activations(model_path, tensors)
    maxima: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
    seen = 0
    for batch in _batches(calib, batch_size):
        for name, values in activations(batch).items():
            flat = values.reshape(-1, values.shape[-1])
            largest = np.abs(flat).max(axis=0)
            maxima[name] = np.maximum(maxima[name], largest) if name in maxima else largest
            if seen < SAMPLE_IMAGES:
                rows[name].append(flat)
        seen += len(batch)
    samples = {}
    for name, parts in rows.items():
        stacked = np.concatenate(parts)
        step = max(1, len(stacked) // SAMPLE_ROWS)
        samples[name] = stacked[::step][:SAMPLE_ROWS].astype(np.float64)
    return maxima, samples


def _batches(calib: CalibrationSet, size: int) -> Iterator[np.ndarray]:
    images = calib.images()
    while batch := list(islice(images, size)):
        yield np.stack(batch)


def smooth(model: onnx.ModelProto, maxima: dict[str, np.ndarray], samples: dict[str, np.ndarray],
           sites: Sequence[SmoothingSite], alphas: Sequence[float] = ALPHAS
           ) -> tuple[onnx.ModelProto, list[SmoothingRecord]]:
    """A copy of ``model`` smoothed at ``sites`` with the alpha each one's samples choose, and what was done."""
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    constants = {i.name: i for i in smoothed.graph.initializer}
    records = []
    for site in sites:
        weight = numpy_helper.to_array(constants[site.weight]).astype(np.float64)
        rows_first = np.moveaxis(weight, site.weight_axis, 0)  # [channels, outputs]
        largest, x = maxima[site.tensor].astype(np.float64), samples[site.tensor]
        before = quantized_product_error(x, rows_first)
        chosen: float | None = None
        error, scale = before, np.ones_like(largest)
        for alpha in alphas:
            candidate = migration_scale(largest, np.abs(rows_first).max(axis=1), alpha)
            candidate_error = quantized_product_error(x / candidate, rows_first * candidate[:, None])
            if candidate_error < error:
                chosen, error, scale = alpha, candidate_error, candidate
        if chosen is None or error > before * MIN_GAIN:
            chosen, error, scale = None, before, np.ones_like(largest)
        else:
            for name in (site.norm_scale, site.norm_bias):
                _replace(constants[name], numpy_helper.to_array(constants[name]) / scale)
            shape = [1] * weight.ndim
            shape[site.weight_axis] = -1
            _replace(constants[site.weight], numpy_helper.to_array(constants[site.weight]) * scale.reshape(shape))
        records.append(SmoothingRecord(site.linear, site.tensor, chosen, _spread(largest), _spread(largest / scale),
                                       before, error))
    return smoothed, records


def migration_scale(activation_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel ``s = max|x|^alpha / max|w|^(1 - alpha)``; a channel that is zero everywhere in
    either keeps ``s = 1``."""
    tiny = np.finfo(np.float32).tiny
    usable = (activation_max > tiny) & (weight_max > tiny)
    scale = np.ones_like(activation_max)
    scale[usable] = activation_max[usable] ** alpha / weight_max[usable] ** (1.0 - alpha)
    return scale


def quantized_product_error(x: np.ndarray, weight: np.ndarray) -> float:
    """``|q(x) q(W) - x W| / |x W|`` (Frobenius) with ``x`` [rows, channels] INT8 per tensor and ``W`` [channels,
    outputs] INT8 per output column, both symmetric on their largest magnitude."""
    exact = x @ weight
    return float(np.linalg.norm(_fake_quantize(x, None) @ _fake_quantize(weight, 0) - exact)
                 / max(float(np.linalg.norm(exact)), 1e-30))


def _fake_quantize(values: np.ndarray, axis: int | None) -> np.ndarray:
    largest = np.abs(values).max(axis=axis, keepdims=axis is not None)
    step = np.where(largest > 0, largest / 127.0, 1.0)
    return np.clip(np.round(values / step), -127, 127) * step


def _spread(channel_max: np.ndarray) -> float:
    return float(channel_max.max() / max(float(np.median(channel_max)), 1e-30))


def _replace(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(tensor).dtype), tensor.name))
