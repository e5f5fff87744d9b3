"""The range each quantized activation of a Q/DQ graph can represent, read from its QuantizeLinear node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# The levels of each quantized type: (lowest, highest, smallest nonzero magnitude) in units of the scale.
LEVELS: dict[int, tuple[float, float, float]] = {
    TensorProto.INT8: (-128.0, 127.0, 0.5),  # a value within half a step of the zero point rounds to it
    TensorProto.UINT8: (0.0, 255.0, 0.5),
    TensorProto.FLOAT8E4M3FN: (-448.0, 448.0, 2.0**-10),  # half the smallest subnormal, 2^-9
}


@dataclass(frozen=True)
class QuantGrid:
    """What a per-tensor Q/DQ pair represents: values from ``low`` to ``high``; below ``zero`` in magnitude
    (around the zero point) a value becomes zero."""

    low: float
    high: float
    zero: float
    zero_point: float

    def saturation(self, values: np.ndarray) -> tuple[float, float]:
        """The share of ``values`` beyond the range, and of their nonzero ones that round to zero."""
        flat = values.reshape(-1).astype(np.float64)
        saturated = float(np.mean((flat < self.low) | (flat > self.high)))
        nonzero = flat[flat != 0]
        lost = float(np.mean(np.abs(nonzero) < self.zero)) if nonzero.size else 0.0
        return saturated, lost


def quantized_ranges(model: onnx.ModelProto) -> dict[str, QuantGrid]:
    """The grid of each activation that a per-tensor QuantizeLinear of ``model`` quantizes, by tensor name."""
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    grids = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants or node.input[1] not in constants:
            continue
        scale = constants[node.input[1]].astype(np.float64)
        if scale.size != 1:
            continue
        zero_point = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        kind = int(numpy_helper.from_array(zero_point).data_type if zero_point is not None
                   else next((a.i for a in node.attribute if a.name == "output_dtype"), TensorProto.UINT8))
        if kind not in LEVELS:
            continue
        lowest, highest, smallest = LEVELS[kind]
        offset = float(zero_point.astype(np.float64).reshape(-1)[0]) if zero_point is not None and kind != \
            TensorProto.FLOAT8E4M3FN else 0.0
        step = float(scale.reshape(-1)[0])
        grids[node.input[0]] = QuantGrid((lowest - offset) * step, (highest - offset) * step, smallest * step,
                                         offset * step)
    return grids
