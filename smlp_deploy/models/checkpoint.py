"""Loading checkpoints: the authors' released files (microsoft/SPACH) and state dicts of this package.

The authors' module names differ from ours, and one of them misleads: their ``proj_h`` is applied to
``x.permute(0, 3, 1, 2)``, whose channel axis is W, so it mixes along the *width*; their ``proh_w`` is applied
to ``x.permute(0, 2, 1, 3)`` and mixes along the *height*. Their fuse conv sees ``cat([x, proj_h, proh_w])``.
So ``proj_h`` maps to our ``mix_w`` and ``proh_w`` to ``mix_h``, and our concat order is
``[x, mix_w, mix_h]``: the fuse weights then meet the branches they were trained on.
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import Arg, CheckpointError, Part
from ..filekind import file_kind
from .smlpnet import SMLPNet
from .variants import VARIANTS, short_name

# Keys under which training scripts nest the weights, in order of preference (the authors' files use "model").
_NESTED_KEYS = ("model", "model_ema", "state_dict")
# BatchNorm's counter of training steps: absent from some re-saved files and irrelevant to inference.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
_MAX_LISTED = 8
_SAVED = "a zip archive holding data.pkl, or a pickle from torch < 1.6"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (``weights_only=True``) and return its state dict, unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    kind = file_kind(path)
    if kind.name == "damaged-zip":
        raise _unreadable(path, "its zip archive is cut short or broken")
    if kind.name not in ("torch", "pickle"):
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint: it is {kind.words}. Expected "
                              f"a file torch.save wrote ({_SAVED}), such as the authors' smlp_s.pth")
    try:
        # argparse.Namespace is what DeiT-style training scripts (the authors' included) store under "args";
        # it holds plain values, so allowing it keeps such files loadable without unpickling anything else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from exc
    except Exception as exc:  # any type: a damaged archive or pickle fails anywhere inside torch.load
        raise _unreadable(path, f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return _unwrap(obj, path)


def _refused(path: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    """torch's weights-only unpickler refuses objects it does not allow, and bytes that are no pickle: which one?"""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+)", text)
    # torch's own rebuild functions are allowed: one refused is a name cut short, as is an unknown opcode
    if found is None or found.group(1).startswith("torch."):
        fault = re.search(r"Unsupported operand \d+|GLOBAL \S+", text)
        return _unreadable(path, fault.group(0) if fault else _first_line(exc))
    return CheckpointError(
        f"checkpoint {str(path)!r} holds Python objects other than tensors and plain containers (it refers to "
        f"{found.group(1)}), which are not unpickled for safety. Re-save it as a state dict: "
        "torch.save(model.state_dict(), path)"
    )


def _unreadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r} cannot be read: it is truncated or damaged ({reason}); copy or "
                           "save it again")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a state dict: expected a mapping of names to tensors, either bare or "
            f"under one of the keys {', '.join(_NESTED_KEYS)}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def is_authors_format(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("to_patch_embedding.") for k in state_dict)


def convert_authors_state_dict(state_dict: dict[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Rename the authors' keys to ours, block by block; keys that do not fit ``depths`` are kept as they are,
    so that the strict check reports them."""
    block_of = [(stage, j) for stage, depth in enumerate(depths) for j in range(depth)]
    converted = {}
    for key, value in state_dict.items():
        new_key, new_value = _convert_key(key, value, block_of)
        converted[new_key] = new_value
    return converted


_AUTHORS_BLOCK_PARTS = {
    "token_mix.0.conv_merge.BN.": "token_mix.dwconv.norm.",
    "token_mix.0.conv_merge.Conv.": "token_mix.dwconv.conv.",
    "token_mix.1.BN.": "token_mix.smlp.norm.",
    "token_mix.1.proj_h.": "token_mix.smlp.mix_w.",  # mixes along W: see the module docstring
    "token_mix.1.proh_w.": "token_mix.smlp.mix_h.",  # mixes along H
    "token_mix.1.fuse.": "token_mix.smlp.fuse.",
    "channel_mix.1.": "channel_mix.norm.",
    "channel_mix.2.net.0.": "channel_mix.fc1.",
    "channel_mix.2.net.3.": "channel_mix.fc2.",
}
_AUTHORS_BLOCK_KEY = re.compile(r"^(token_mix|channel_mix)\.(\d+)\.(.*)$")


def _convert_key(key: str, value: torch.Tensor, block_of: list[tuple[int, int]]) -> tuple[str, torch.Tensor]:
    if m := re.match(r"^to_patch_embedding\.(\d+)\.0\.weight$", key):
        return f"stages.{m.group(1)}.downsample.weight", value
    if key.startswith("batch_norm."):
        return "head.norm." + key.removeprefix("batch_norm."), value
    if key.startswith("mlp_head.0."):
        return "head.fc." + key.removeprefix("mlp_head.0."), value
    m = _AUTHORS_BLOCK_KEY.match(key)
    if m is None or int(m.group(2)) >= len(block_of):
        return key, value
    part = f"{m.group(1)}.{m.group(3)}"
    for theirs, ours in _AUTHORS_BLOCK_PARTS.items():
        if part.startswith(theirs):
            stage, j = block_of[int(m.group(2))]
            if ".proj_h.weight" in key or ".proh_w.weight" in key:
                value = _squeeze_1x1(value)
            return f"stages.{stage}.blocks.{j}.{ours}{part.removeprefix(theirs)}", value
    return key, value


def _squeeze_1x1(weight: torch.Tensor) -> torch.Tensor:
    """The authors' token-mixing weights are 1x1 conv kernels (S, S, 1, 1); ours are matrices (S, S)."""
    return weight[:, :, 0, 0] if weight.dim() == 4 and weight.shape[2:] == (1, 1) else weight


def load_checkpoint(model: SMLPNet, path: str | Path) -> SMLPNet:
    """Load a checkpoint into ``model`` strictly; every mismatch is reported with the keys involved."""
    state_dict = read_state_dict(path)
    found = Architecture.of(state_dict, str(path))
    _check_architecture(model, found, str(path))
    _check_resolution(model, found, str(path))
    if is_authors_format(state_dict):
        state_dict = convert_authors_state_dict(state_dict, model.config.depths)
    check_keys(model, state_dict, str(path))
    model.load_state_dict(state_dict, strict=False)  # strictness was checked above, with better messages
    return model


def check_keys(model: SMLPNet, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys, with a hint for the head."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or misshaped):
        return
    hint: tuple[Part, ...] = ()
    parameter = None
    fc = state_dict.get("head.fc.weight")
    if fc is not None and fc.shape[0] != model.num_classes:
        hint, parameter = (f"\n  The checkpoint has {fc.shape[0]} classes: use ", Arg("num_classes", fc.shape[0]),
                           "."), "num_classes"
    raise CheckpointError(
        f"checkpoint {source!r} does not fit {model.variant}:"
        + _listing("missing", missing)
        + _listing("unexpected", unexpected)
        + _listing("mis-shaped", misshaped),
        *hint,
        parameter=parameter,
    )


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"\n  {len(items)} {title} key(s): {shown}{more}"


@dataclass(frozen=True)
class Architecture:
    """What a state dict says about the network it came from, in either naming."""

    width: int  # channels after the patch embedding
    n_blocks: int
    num_classes: int
    grid: int  # token grid side of the first stage (image size / patch size)

    @classmethod
    def of(cls, state_dict: dict[str, torch.Tensor], source: str) -> Architecture:
        if is_authors_format(state_dict):
            blocks = {k.split(".")[1] for k in state_dict if k.startswith("token_mix.")}
            keys = ("to_patch_embedding.0.0.weight", "mlp_head.0.weight", "token_mix.0.1.proj_h.weight")
        else:
            blocks = {m.group(0) for k in state_dict if (m := re.match(r"^stages\.\d+\.blocks\.\d+\.", k))}
            keys = ("stages.0.downsample.weight", "head.fc.weight", "stages.0.blocks.0.token_mix.smlp.mix_w.weight")
        embed, head, mix = (state_dict.get(k) for k in keys)
        if embed is None or head is None or mix is None:
            raise CheckpointError(f"checkpoint {source!r} is not an sMLPNet state dict (no {', '.join(keys)})")
        return cls(embed.shape[0], len(blocks), head.shape[0], mix.shape[0])

    def variant(self) -> str | None:
        for v in VARIANTS.values():
            if (v.config.dim, sum(v.config.depths)) == (self.width, self.n_blocks):
                return v.name
        return None


@dataclass(frozen=True)
class ModelArgs:
    """The :func:`~smlp_deploy.models.create_model` arguments that fit a checkpoint."""

    name: str
    num_classes: int
    image_size: int


def infer_model_args(path: str | Path) -> ModelArgs:
    """``create_model`` arguments (name, num_classes, image_size) that fit the checkpoint at ``path``."""
    found = Architecture.of(read_state_dict(path), str(path))
    name = found.variant()
    if name is None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} (width {found.width}, {found.n_blocks} blocks) matches no known sMLPNet variant"
        )
    size = found.grid * VARIANTS[name].config.patch_size
    return ModelArgs(name, found.num_classes, size)


def _check_architecture(model: SMLPNet, found: Architecture, source: str) -> None:
    ours = (model.config.dim, sum(model.config.depths))
    if (found.width, found.n_blocks) == ours:
        return
    guess = found.variant()
    fix = (": use ", Arg("variant", short_name(guess))) if guess else (": it matches no known variant",)
    raise CheckpointError(
        f"checkpoint {source!r} is for another variant (width {found.width}, {found.n_blocks} blocks) than "
        f"{model.variant} (width {ours[0]}, {ours[1]} blocks)", *fix, parameter="variant",
    )


def _check_resolution(model: SMLPNet, found: Architecture, source: str) -> None:
    size = model.config.stage_sizes(model.image_size)[0]
    if found.grid == size:
        return
    trained = found.grid * model.config.patch_size
    raise CheckpointError(
        f"checkpoint {source!r} was trained at {trained}x{trained} (its token-mixing weights are "
        f"{found.grid}x{found.grid}) but the model was built for {model.image_size}x{model.image_size}. "
        "sMLPNet's mixing weights are tied to the resolution: use ", Arg("image_size", trained), ".",
        parameter="image_size",
    )
