"""An export folder is one object: its manifest names its files by name alone, so every reader stays inside it,
and a file it lists is handed out only once it matches the sha256 recorded there."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest

from smlp_deploy import Classifier
from smlp_deploy.errors import ArtifactError
from smlp_deploy.manifest import MANIFEST_NAME, UNVERIFIED

OUTSIDE = "../outside/model.onnx"


@pytest.fixture
def crafted(random_export, tmp_path, request) -> Path:
    """A copy of a real export whose manifest also lists a real model outside the folder, by a path that leaves it
    (``request.param``, ``{outside}`` standing for the outside folder's absolute path), with that model's true
    sha256: a reader that joined the path would read, and accept, a file of another folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(random_export / "model.onnx", outside / "model.onnx")
    copy = tmp_path / "export"
    shutil.copytree(random_export, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    entry = next(a for a in data["artifacts"] if a["path"] == "model.onnx")
    data["artifacts"].append({**entry, "path": request.param.format(outside=outside)})
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    return copy


def command(name: str, *argv: str):
    """The command ``smlp-<name>`` run in this process, as its console script runs it."""
    def run(monkeypatch) -> int:
        monkeypatch.setattr("sys.argv", [f"smlp-{name}", *argv])
        return importlib.import_module(f"smlp_deploy.cli.{name}").entry_point()
    return run


LOADERS = {
    "Classifier": lambda export, monkeypatch: Classifier(export / "model.onnx"),
    "smlp-triton": lambda export, monkeypatch: command("triton", str(export), "--out", str(export.parent / "repo"))(
        monkeypatch),
    "smlp-export --from-onnx": lambda export, monkeypatch: command("export", "--from-onnx", str(export))(monkeypatch),
    "smlp-export --verify-engines": lambda export, monkeypatch: command("export", "--verify-engines", str(export))(
        monkeypatch),
}


@pytest.mark.parametrize("crafted", [OUTSIDE, "{outside}/../outside/model.onnx"], indirect=True,
                         ids=["relative", "absolute"])
@pytest.mark.parametrize("loader", LOADERS)
def test_every_loader_refuses_a_manifest_naming_a_file_outside_its_folder(crafted, loader, monkeypatch, capsys):
    artifacts = json.loads((crafted / MANIFEST_NAME).read_text())["artifacts"]
    message = (f"names {artifacts[-1]['path']!r} at artifacts[{len(artifacts) - 1}].path, which is not the name of a "
               "file inside its export folder")
    if loader == "Classifier":
        with pytest.raises(ArtifactError) as refused:
            LOADERS[loader](crafted, monkeypatch)
        err = str(refused.value)
    else:
        assert LOADERS[loader](crafted, monkeypatch) == 2
        err = capsys.readouterr().err
    assert message in err and "re-export it" in err, err
    assert not (crafted.parent / "repo").exists()


@pytest.mark.parametrize("name", ["../../engine.fp32.rtx.plan", "/etc/x/../engine.fp32.rtx.plan", "notes.txt",
                                  "model.onnx"])
def test_a_planned_engine_is_an_engine_file_of_the_folder(random_export, tmp_path, name):
    data = json.loads((random_export / MANIFEST_NAME).read_text())
    data["engines"][0]["engines"].append(name)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    shutil.copy(random_export / "model.onnx", tmp_path)
    with pytest.raises(ArtifactError, match=rf"names '{re.escape(name)}' at engines\[0\]\.engines\[\d\], which is "
                                            "not an engine file an export writes"):
        Classifier(tmp_path / "model.onnx")


def test_a_changed_file_is_named_with_its_fix(random_export, tmp_path):
    """A changed ONNX file is re-exported; a changed engine is rebuilt from the ONNX file it was built from."""
    from smlp_deploy.export_folder import ExportFolder

    copy = tmp_path / "export"
    shutil.copytree(random_export, copy)
    folder = ExportFolder.open(copy)
    assert folder.artifact_path("model.onnx") == copy / "model.onnx"
    (copy / "model.onnx").write_bytes(b"changed")
    with pytest.raises(ArtifactError, match=r"model\.onnx does not match the sha256 recorded in .*manifest\.json: the "
                                            r"file changed after it was verified; re-export it \(smlp_deploy\.export"):
        folder.artifact_path("model.onnx")
    engine = next((a for a in folder.manifest.artifacts if a.kind and a.kind.is_engine), None)
    if engine is None:
        pytest.skip("no engine builds here")
    assert engine.status == UNVERIFIED
    (copy / engine.path).write_bytes(b"changed")
    with pytest.raises(ArtifactError, match=r"changed after it was built; rebuild it with smlp_deploy\.export\."
                                            r"build_from_onnx"):
        folder.artifact_path(engine.path)
    (copy / engine.path).unlink()
    with pytest.raises(ArtifactError, match=rf"{engine.path} is missing from the export: rebuild it"):
        folder.artifact_path(engine.path)
    with pytest.raises(ArtifactError, match=r"notes\.txt is not part of the export in .*: its manifest\.json lists "
                                            r"model\.onnx, "):
        folder.artifact_path("notes.txt")


def test_the_folder_beside_an_artifact(random_export, tmp_path):
    from smlp_deploy.export_folder import ExportFolder

    assert ExportFolder.beside(tmp_path / "model.onnx") is None
    shutil.copy(random_export / MANIFEST_NAME, tmp_path)
    assert ExportFolder.beside(tmp_path / "model.onnx").manifest.model.variant == "test"
