"""smlp-eval's class folders: named by index, label, any WordNet lemma or id; anything else is named back."""

from __future__ import annotations

import json
import shutil

import pytest

from smlp_deploy.cli.eval import main as eval_main
from smlp_deploy.errors import InputError
from smlp_deploy.evaluation import class_indices
from smlp_deploy.manifest import IMAGENET_LABELS
from smlp_deploy.samples import sample_images


def test_imagenet_folders_by_label_lemma_wnid_or_index():
    names = ["tabby", "missile", "Egyptian_Cat", "n01440764", "12", "Great White Shark"]
    assert class_indices(names, IMAGENET_LABELS, 1000) == {
        "tabby": 281, "missile": 657, "Egyptian_Cat": 285, "n01440764": 0, "12": 12, "Great White Shark": 2}
    # "missile" is class 657's label and a lemma of 744 ("projectile, missile"): the label wins.
    assert class_indices(["projectile"], IMAGENET_LABELS, 1000) == {"projectile": 744}


def test_custom_labels_and_sorted_order():
    assert class_indices(["b", "a"], ["a", "b", "c"], 3) == {"b": 1, "a": 0}
    assert class_indices(["zebra", "ant"], ["a", "b"], 2, sorted_order=True) == {"zebra": 0, "ant": 1}
    with pytest.raises(InputError, match="3 class subfolders but the model has 2 outputs"):
        class_indices(["x", "y", "z"], ["a", "b"], 2, sorted_order=True)


@pytest.mark.parametrize("names, message", [
    (["tabby", "not_a_class", "1001"], r"2 folders match no class: not_a_class, 1001"),
    (["crane"], r"ambiguous: crane \(134, 517\)"),
    (["tabby", "281"], r"class folders tabby, 281 name the same class"),
])
def test_folders_that_match_nothing_or_twice_are_listed(names, message):
    with pytest.raises(InputError, match=message) as info:
        class_indices(names, IMAGENET_LABELS, 1000)
    assert info.value.parameter == "data"


def test_sorted_order_is_suggested_only_where_it_is_offered():
    with pytest.raises(InputError, match=r"Rename them, or map folders in sorted order .* \(sorted_order=True\)$"):
        class_indices(["my cats"], IMAGENET_LABELS, 1000)
    with pytest.raises(InputError, match=r"no class: my cats\. Rename them$"):
        class_indices(["my cats"], IMAGENET_LABELS, 1000, sortable=False)


def test_smlp_eval_maps_label_folders_to_imagenet_indices(random_export, tmp_path, capsys):
    data = tmp_path / "val"
    for name, photo in (("tabby", "chelsea.jpg"), ("missile", "rocket.jpg")):
        (data / name).mkdir(parents=True)
        shutil.copy(next(p for p in sample_images() if p.name == photo), data / name)
    artifact = str(random_export / "model.onnx")
    assert eval_main([artifact, "--data", str(data), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n_images"] == 2
    (data / "my cats").mkdir()
    shutil.copy(sample_images()[0], data / "my cats")
    with pytest.raises(InputError, match="1 folder matches no class: my cats"):
        eval_main([artifact, "--data", str(data), "--quiet"])
    assert eval_main([artifact, "--data", str(data), "--sorted-classes", "--quiet"]) == 0


def test_a_backend_that_fails_to_load_leaves_none_open(random_export, tmp_path, monkeypatch):
    """The export's evaluation step: the artifacts opened before one that fails to load are closed."""
    from dataclasses import replace

    from smlp_deploy import evaluation
    from smlp_deploy.errors import ArtifactError
    from smlp_deploy.imagefolder import LabeledFolder
    from smlp_deploy.manifest import MANIFEST_NAME, Manifest
    from smlp_deploy.models import create_model
    from smlp_deploy.runtime import load_backend

    copy = tmp_path / "export"
    shutil.copytree(random_export, copy)
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.fp16.onnx").write_bytes(data[: len(data) // 2])  # a second artifact, cut in half
    manifest = Manifest.load(copy / MANIFEST_NAME)
    manifest.record(replace(manifest.artifact("model.onnx"), path="model.fp16.onnx", precision="fp16"))
    (tmp_path / "val" / "tabby").mkdir(parents=True)
    shutil.copy(sample_images()[0], tmp_path / "val" / "tabby")
    opened = []

    def load_and_keep(*args, **kwargs):
        opened.append(load_backend(*args, **kwargs))  # the real loader; the test only keeps what it returned
        return opened[-1]

    monkeypatch.setattr(evaluation, "load_backend", load_and_keep)
    with pytest.raises(ArtifactError, match=r"model\.fp16\.onnx' cannot be loaded by onnxruntime"):
        evaluation.evaluate_artifacts(create_model("test", image_size=64), manifest, copy,
                                      LabeledFolder.scan(tmp_path / "val"), say=print, quiet=True)
    assert [b.source for b in opened] == ["model.onnx"] and all(b.closed for b in opened)
