from __future__ import annotations

import argparse
import os

import pytest
import torch

from smlp_deploy.errors import CheckpointError, InputError
from smlp_deploy.models import (
    PreprocessConfig,
    count_macs,
    count_params,
    create_model,
    imagenet_labels,
    imagenet_wnids,
)

from .authors_reference import AuthorsSMLPNet, randomize
from .conftest import photo_batch

PAPER = {  # variant: (params in M, GMACs), as the paper's table rounds them
    "smlpnet_tiny": (24.1, 5.0),
    "smlpnet_small": (48.6, 10.3),
    "smlpnet_base": (65.9, 14.0),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_variants_match_the_paper(name):
    model = create_model(name)
    params_m, gmacs = PAPER[name]
    assert round(count_params(model) / 1e6, 1) == params_m
    assert round(count_macs(model) / 1e9, 1) == gmacs


def test_aliases_eval_mode_and_preprocess_config():
    model = create_model("tiny")
    assert model.variant == "smlpnet_tiny" and not model.training
    assert model.preprocess == PreprocessConfig(
        input_size=224, resize_size=256, interpolation="bicubic", crop_pct=0.875,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )
    assert create_model("test", image_size=96).preprocess.resize_size == 109


def test_unknown_name_and_bad_image_size():
    with pytest.raises(InputError, match=r"unknown model 'huge'.*smlpnet_tiny"):
        create_model("huge")
    with pytest.raises(InputError, match="multiple of 32"):
        create_model("test", image_size=100)


def test_labels_ship_with_the_package():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[207] == "golden retriever"
    assert imagenet_wnids()[0] == "n01440764"


def test_drop_path_is_inert_at_inference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model = create_model("small", image_size=64)  # drop_path_rate 0.2 in training
    ref = model(x)
    assert torch.equal(ref, model(x))
    model.train()
    for m in model.modules():  # keep BatchNorm on running statistics; only drop-path differs in train()
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    assert not torch.allclose(ref, model(x))


def _authors_checkpoint(tmp_path, variant, image_size=64, num_classes=1000, seed=0, wrap="model"):
    model = create_model(variant, image_size=image_size, num_classes=num_classes)
    authors = randomize(
        AuthorsSMLPNet(model.config.dim, model.config.depths, model.config.alpha, num_classes, image_size), seed
    )
    path = tmp_path / f"{variant}_{image_size}.pth"
    state = authors.state_dict()
    payload = state if wrap is None else {wrap: state, "epoch": 299, "args": argparse.Namespace(model="smlp")}
    torch.save(payload, path)
    return authors, path


def assert_reproduces(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to 1e-5 of the logits' scale: float32 summation order differs between the two layouts."""
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert torch.equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("wrap", ["model", "model_ema", "state_dict", None])
def test_authors_checkpoint_reproduces_their_outputs(tmp_path, wrap):
    authors, path = _authors_checkpoint(tmp_path, "test", image_size=64, wrap=wrap)
    ours = create_model("test", image_size=64, checkpoint=path)
    x = torch.cat([torch.from_numpy(photo_batch(64)), torch.randn(3, 3, 64, 64)])
    with torch.no_grad():
        assert_reproduces(ours(x), authors(x))


def test_authors_tiny_checkpoint_at_224(tmp_path):
    authors, path = _authors_checkpoint(tmp_path, "tiny", image_size=224, seed=1)
    ours = create_model("tiny", checkpoint=path)
    x = torch.from_numpy(photo_batch(224)[:2])
    with torch.no_grad():
        assert_reproduces(ours(x), authors(x))


def test_swapping_the_axes_would_be_caught(tmp_path):
    """The conversion test can fail: mapping proj_h to mix_h (by name) gives other outputs."""
    authors, path = _authors_checkpoint(tmp_path, "test", image_size=64)
    ours = create_model("test", image_size=64, checkpoint=path)
    for block in (b for s in ours.stages for b in s.blocks):
        smlp = block.token_mix.smlp
        w, h = smlp.mix_w.weight.data.clone(), smlp.mix_h.weight.data.clone()
        smlp.mix_w.weight.data, smlp.mix_h.weight.data = h, w
    x = torch.from_numpy(photo_batch(64))
    with torch.no_grad():
        assert not torch.allclose(ours(x), authors(x), atol=1e-3)


def test_our_own_state_dict_round_trips(tmp_path):
    model = randomize(create_model("test", image_size=64, num_classes=10))
    path = tmp_path / "ours.pt"
    torch.save(model.state_dict(), path)
    loaded = create_model("test", image_size=64, num_classes=10, checkpoint=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("theirs, ours", [("small", "tiny"), ("test", "base")])
def test_wrong_variant_is_named(tmp_path, theirs, ours):
    _, path = _authors_checkpoint(tmp_path, theirs, image_size=64)
    message = rf"another variant .* than smlpnet_{ours} .*: use variant='{theirs}'"
    with pytest.raises(CheckpointError, match=message) as info:
        create_model(ours, image_size=64, checkpoint=path)
    assert info.value.parameter == "variant"


def test_the_export_command_names_the_flag_that_fixes_a_checkpoint(tmp_path, capsys, monkeypatch):
    from smlp_deploy.cli.export import entry_point

    _, path = _authors_checkpoint(tmp_path, "test", image_size=64)
    monkeypatch.setattr("sys.argv", ["smlp-export", "--variant", "tiny", "--image-size", "64", "--checkpoint",
                                     str(path), "--out", str(tmp_path / "out")])
    assert entry_point() == 2
    assert "error: --variant: checkpoint" in capsys.readouterr().err


def test_wrong_resolution_is_explained(tmp_path):
    _, path = _authors_checkpoint(tmp_path, "test", image_size=64)
    with pytest.raises(CheckpointError, match=r"trained at 64x64.*use image_size=64"):
        create_model("test", image_size=96, checkpoint=path)


def test_wrong_class_count_is_explained(tmp_path):
    _, path = _authors_checkpoint(tmp_path, "test", image_size=64, num_classes=10)
    with pytest.raises(CheckpointError, match=r"(?s)head\.fc\.weight.*has 10 classes: use num_classes=10"):
        create_model("test", image_size=64, checkpoint=path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = create_model("test", image_size=64)
    state = model.state_dict()
    del state["head.fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError,
                       match=r"1 missing key\(s\): head\.fc\.bias(.|\n)*1 unexpected key\(s\): extra\.weight"):
        create_model("test", image_size=64, checkpoint=path)


def test_truncated_file(tmp_path):
    _, path = _authors_checkpoint(tmp_path, "test", image_size=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read: it is truncated or damaged"):
        create_model("test", image_size=64, checkpoint=path)


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": create_model("test", image_size=64).state_dict(), "hook": Payload()}, path)
    with pytest.raises(CheckpointError, match="not unpickled for safety"):
        create_model("test", image_size=64, checkpoint=path)


def test_missing_file_and_non_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("test", checkpoint=tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        create_model("test", checkpoint=path)
