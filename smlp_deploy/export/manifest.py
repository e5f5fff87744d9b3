"""manifest.json: what an export directory holds and how well each artifact matches PyTorch.

The contract other tools (the Classifier, smlp-bench, smlp-eval) read; keep field names stable.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..fileio import write_json_atomic

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str | None]:
    versions = {}
    for dist in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "onnxscript", "tensorrt", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["python"] = platform.python_version()
    return versions


def new_manifest(model_info: dict[str, Any], preprocess: dict[str, Any], labels: list[str] | str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_info,
        "preprocess": preprocess,
        "labels": labels,
        "artifacts": [],
        "engine": {"status": "skipped", "reason": "no engine requested", "commands": []},
        "versions": library_versions(),
    }


def upsert_artifact(manifest: dict[str, Any], entry: dict[str, Any]) -> None:
    """Add ``entry``, replacing an earlier record of the same path (re-runs into one directory)."""
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] != entry["path"]] + [entry]


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and minimally validate a manifest; errors name the file and the missing part."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"manifest {str(path)!r} cannot be read: {exc}") from exc
    missing = [k for k in ("model", "preprocess", "artifacts") if k not in manifest]
    if missing:
        raise ArtifactError(f"manifest {str(path)!r} lacks {', '.join(missing)}: re-export with smlp-export")
    return manifest


def manifest_beside(artifact: Path) -> Path | None:
    """The manifest in the artifact's directory, if there is one."""
    candidate = artifact.parent / MANIFEST_NAME
    return candidate if candidate.is_file() else None


def artifact_entry(manifest: dict[str, Any], artifact: Path) -> dict[str, Any] | None:
    for entry in manifest["artifacts"]:
        if entry["path"] == artifact.name:
            return entry
    return None
