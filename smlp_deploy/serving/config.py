"""A Triton model configuration as a typed value, written as ``config.pbtxt`` (protobuf text format).

Only the fields this package writes are modelled. The text is rendered here, without Triton's protobuf module, so
writing a repository needs no Triton package; the tests parse every file with ``tritonclient``'s
``model_config_pb2`` and ``text_format.Parse``, which refuse unknown fields, bad enum values and wrong types.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorConfig:
    """One input or output without the batch axis (``dims``; -1 for a variable length)."""

    name: str
    data_type: str  # Triton's enum name: TYPE_FP32, TYPE_UINT8, ...
    dims: tuple[int, ...]
    label_filename: str | None = None  # outputs: one label per line, line i = class i (classification extension)
    allow_ragged_batch: bool = False  # inputs: requests of different lengths may share a batch
    format: str | None = None  # inputs: FORMAT_NCHW for image tensors

    def to_pbtxt(self) -> str:
        fields = [f"name: {_quote(self.name)}", f"data_type: {self.data_type}"]
        if self.format:
            fields.append(f"format: {self.format}")
        fields.append(f"dims: [ {', '.join(str(d) for d in self.dims)} ]")
        if self.label_filename:
            fields.append(f"label_filename: {_quote(self.label_filename)}")
        if self.allow_ragged_batch:
            fields.append("allow_ragged_batch: true")
        return "{\n" + "".join(f"    {f}\n" for f in fields) + "  }"


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0


@dataclass(frozen=True)
class InstanceGroup:
    kind: str  # KIND_GPU | KIND_CPU
    count: int = 1


@dataclass(frozen=True)
class EnsembleStep:
    """One model of an ensemble; the maps go from the step model's tensor names to the ensemble's."""

    model_name: str
    input_map: dict[str, str]
    output_map: dict[str, str]


@dataclass(frozen=True)
class ModelConfig:
    """One model's ``config.pbtxt``. ``platform`` (tensorrt_plan, onnxruntime_onnx, ensemble) or ``backend``
    (python) says what runs it; ``accelerator`` adds a GPU execution accelerator (ONNX Runtime's TensorRT) with
    its parameters."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    platform: str | None = None
    backend: str | None = None
    default_model_filename: str | None = None
    dynamic_batching: DynamicBatching | None = None
    instance_group: InstanceGroup | None = None
    accelerator: tuple[str, dict[str, str]] | None = None
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)

    def to_pbtxt(self) -> str:
        lines = [f"name: {_quote(self.name)}"]
        if self.platform:
            lines.append(f"platform: {_quote(self.platform)}")
        if self.backend:
            lines.append(f"backend: {_quote(self.backend)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        if self.default_model_filename:
            lines.append(f"default_model_filename: {_quote(self.default_model_filename)}")
        lines.append(_list("input", [t.to_pbtxt() for t in self.inputs]))
        lines.append(_list("output", [t.to_pbtxt() for t in self.outputs]))
        if self.dynamic_batching:
            batching = self.dynamic_batching
            preferred = ", ".join(str(b) for b in batching.preferred_batch_size)
            lines.append("dynamic_batching {\n"
                         + (f"  preferred_batch_size: [ {preferred} ]\n" if preferred else "")
                         + f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}\n}}")
        if self.instance_group:
            group = self.instance_group
            lines.append(f"instance_group [\n  {{\n    kind: {group.kind}\n    count: {group.count}\n  }}\n]")
        if self.accelerator:
            name, params = self.accelerator
            body = "".join(f"        parameters {{ key: {_quote(k)} value: {_quote(v)} }}\n" for k, v in params.items())
            lines.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
                         f"      {{\n        name: {_quote(name)}\n{body}      }}\n    ]\n  }}\n}}")
        if self.ensemble_steps:
            steps = [_step(s) for s in self.ensemble_steps]
            lines.append("ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}")
        for key, value in self.parameters.items():
            lines.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}")
        return "\n".join(lines) + "\n"


def _step(step: EnsembleStep) -> str:
    maps = [f"      input_map {{ key: {_quote(k)} value: {_quote(v)} }}" for k, v in step.input_map.items()]
    maps += [f"      output_map {{ key: {_quote(k)} value: {_quote(v)} }}" for k, v in step.output_map.items()]
    return ("    {\n" + f"      model_name: {_quote(step.model_name)}\n      model_version: -1\n"
            + "\n".join(maps) + "\n    }")


def _list(name: str, items: list[str]) -> str:
    return f"{name} [\n  " + ",\n  ".join(items) + "\n]"


def _quote(text: str) -> str:
    """A text-format string literal. Only printable ASCII is written (names are checked before they get here)."""
    if not (text.isascii() and text.isprintable()):
        raise ValueError(f"{text!r}: config.pbtxt strings here are printable ASCII")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
