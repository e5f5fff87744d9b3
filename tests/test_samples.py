"""The data the package ships for a first run: the photographs, and the digits demo (its images written from
scikit-learn's digits, its trained checkpoint packaged)."""

from __future__ import annotations

import subprocess
import sys

import torch

from smlp_deploy.samples import sample_images
from smlp_deploy.samples.digits import CHECKPOINT, NUM_CLASSES, main


def test_the_photographs_and_the_checkpoint_are_package_data():
    assert [p.name for p in sample_images()] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg",
                                                 "hubble_deep_field.jpg", "rocket.jpg"]
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["head.fc.weight"].shape[0] == NUM_CLASSES


def test_the_digits_demo_writes_its_folders_and_names_its_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "digits")]) == 0
    printed = capsys.readouterr().out
    assert "digits/train (1347 images)" in printed and "digits/test (450 images)" in printed
    assert f"checkpoint: {CHECKPOINT}" in printed
    assert sorted(p.name for p in (tmp_path / "digits" / "test").iterdir()) == [str(d) for d in range(10)]
    assert main(["--checkpoint"]) == 0 and capsys.readouterr().out.strip() == str(CHECKPOINT)


def test_without_scikit_learn_the_demo_says_what_to_install(tmp_path):
    script = ("import sys; sys.modules['sklearn'] = None; sys.argv[1:] = [sys.argv[1]]; import runpy; "
              "runpy.run_module('smlp_deploy.samples.digits', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "d")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1 and done.stderr.strip() == (
        "error: the digits come from scikit-learn, which is not installed: pip install 'smlp-deploy[demo]'")
    assert not (tmp_path / "d").exists()
