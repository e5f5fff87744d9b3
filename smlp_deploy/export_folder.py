"""An export folder as one object: its manifest, and the paths of the files it lists, each handed out only once the
file is known to be the one the export recorded (listed, present, the same sha256).

Every reader of an export opens it here (the Classifier, the Triton repository writer, ``smlp-export --from-onnx``
and ``--verify-engines``), so the checks and their messages are written once. The manifest names its files by
name alone (:meth:`Manifest.load` refuses any other), so a path handed out is inside the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import EXPORT_MODEL, ArtifactError, Part, Words
from .fileio import sha256_file
from .manifest import MANIFEST_NAME, UNVERIFIED, Artifact, Manifest

VERIFICATION_NAME = "verification.npz"  # the inputs every artifact is checked on, and PyTorch's logits


@dataclass(frozen=True)
class ExportFolder:
    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path, *, parameter: str = "export_dir") -> ExportFolder:
        """The export in ``path``; an error naming ``parameter`` where it holds none."""
        path = Path(path)
        if not (path / MANIFEST_NAME).is_file():
            raise ArtifactError(f"{path} is not an export folder: it has no {MANIFEST_NAME} (make one with ",
                                EXPORT_MODEL, ")", parameter=parameter)
        return cls(path, Manifest.load(path / MANIFEST_NAME))

    @classmethod
    def beside(cls, artifact: str | Path) -> ExportFolder | None:
        """The export folder ``artifact`` is in, if it has a manifest."""
        folder = Path(artifact).parent
        return cls(folder, Manifest.load(folder / MANIFEST_NAME)) if (folder / MANIFEST_NAME).is_file() else None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    def listed(self) -> str:
        """The files the manifest lists, for a message."""
        return ", ".join(a.path for a in self.manifest.artifacts) or "no artifacts"

    def verification_path(self, *, parameter: str = "export_dir") -> Path:
        """``verification.npz``, which engines built later are checked on."""
        path = self.path / VERIFICATION_NAME
        if not path.is_file():
            raise ArtifactError(f"{self.path} has no {VERIFICATION_NAME} (the inputs and PyTorch logits its engines "
                                "are checked on): re-export it with ", EXPORT_MODEL, parameter=parameter)
        return path

    def artifact_path(self, name: str, *, parameter: str | None = None) -> Path:
        """The path of ``name``, which the manifest must list, once its file matches the sha256 recorded there."""
        entry = self.manifest.artifact(name)
        if entry is None:
            raise ArtifactError(f"{name} is not part of the export in {self.path}: its {MANIFEST_NAME} lists "
                                f"{self.listed()}", parameter=parameter)
        return self.verified_path(entry, parameter=parameter)

    def verified_path(self, entry: Artifact, *, parameter: str | None = None) -> Path:
        """The path of the manifest's ``entry``, once its file matches the sha256 recorded."""
        path = self.path / entry.path
        fix: tuple[Part, ...] = ("re-export it (", EXPORT_MODEL, ")")
        if entry.kind is not None and entry.kind.is_engine:
            fix = ("rebuild it with ", Words(f"smlp_deploy.export.build_from_onnx({str(self.path)!r})",
                                             f"smlp-export --from-onnx {self.path}"))
        if not path.is_file():
            raise ArtifactError(f"{path} is missing from the export: ", *fix, parameter=parameter)
        if sha256_file(path) != entry.sha256:
            made = "built" if entry.status == UNVERIFIED else "verified"
            raise ArtifactError(f"{path} does not match the sha256 recorded in {self.manifest_path}: the file changed "
                                f"after it was {made}; ", *fix, parameter=parameter)
        return path
