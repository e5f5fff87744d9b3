"""The README, held to the code (issue 33): every command it shows parses with that command's own parser, every
install it shows names an extra or the server the toolkit looks for, and its export example's comment says what
the export writes."""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from smlp_deploy.environment import TRITON_PACKAGE

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def shell_lines() -> list[str]:
    """The lines of the README's shell blocks (not its Python), comments dropped, ``[--flag]`` (optional) kept."""
    blocks = [body for language, body in re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M) if not language]
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line]


def commands() -> list[str]:
    return [line for line in shell_lines() if line.startswith("smlp-")]


def test_the_commands_are_found():
    """The README's shell blocks hold a command of each kind the parametrized test below reads (none found would
    leave it an empty, passing set)."""
    assert {line.split()[0] for line in commands()} >= {"smlp-export", "smlp-predict", "smlp-eval", "smlp-bench",
                                                       "smlp-serve", "smlp-triton", "smlp-debug", "smlp-compare"}


@pytest.mark.parametrize("line", commands())
def test_every_command_parses_with_its_own_parser(line):
    name, *args = shlex.split(line.replace("[", "").replace("]", ""))
    module, _, _ = PROJECT["scripts"][name].partition(":")
    parser = importlib.import_module(module).parser()
    try:
        parser.parse_args(args)
    except SystemExit as exc:  # argparse's exit on an unknown flag or a bad value
        pytest.fail(f"the README's `{line}` does not parse with {name}'s parser (exit {exc.code})")


def test_every_install_names_an_extra_or_the_server_the_toolkit_looks_for():
    installs = [line for line in shell_lines() if line.startswith("pip install")]
    extras = [extra for line in installs for group in re.findall(r"'\.\[([a-z,]+)\]'", line) for extra in
              group.split(",")]
    assert extras and set(extras) <= set(PROJECT["optional-dependencies"])
    assert {"bench", "openvino", "serve", "ray"} <= set(extras)  # each beside the command that needs it
    servers = [line for line in installs if "pytriton" in line]
    assert servers == [f'pip install --no-deps --target "$VIRTUAL_ENV/tritonserver" {TRITON_PACKAGE}']


def test_the_fp16_examples_comment_says_which_engine_it_builds(tmp_path):
    """``smlp-export --variant tiny --fp16``: the fp32 ONNX file is the reference, and only fp16 gets an engine."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX builds the engine (the rtx extra)")
    from smlp_deploy.cli.export import main

    line = next(line for line in README.splitlines() if line.startswith("smlp-export --variant tiny --fp16 --out"))
    assert line.endswith("# ONNX fp32 (the reference) + fp16, the fp16 engine")
    assert main(["--variant", "test", "--image-size", "64", "--fp16", "--out", str(tmp_path / "x"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir() if p.suffix in (".onnx", ".plan")) == [
        "engine.fp16.rtx.plan", "model.fp16.onnx", "model.onnx"]
