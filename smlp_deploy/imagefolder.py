"""Image folders on disk: every image under a directory, or a labeled folder in the ImageNet layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def not_a_folder(path: Path) -> str | None:
    """Why ``path`` cannot be read as a folder, in words for a message; None when it is a folder."""
    if path.is_dir():
        return None
    return "is a file, not a folder" if path.exists() else "does not exist"


def holds_no_images(folder: str | Path, what: str = "folder") -> str:
    """The words for a ``what`` (a folder, a calibration folder) in which :func:`find_images` found nothing."""
    return f"{what} {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}, searched recursively)"


def find_images(root: str | Path) -> list[Path]:
    """Every file with an image suffix under ``root`` (recursive, case-insensitive), in sorted order."""
    root = Path(root)
    if problem := not_a_folder(root):
        raise InputError(f"image folder {str(root)!r} {problem}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class LabeledFolder:
    """``root/<class name>/**/<image>``: the ImageNet validation layout, classes in sorted order."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, str]]  # (image, class name)

    @classmethod
    def scan(cls, root: str | Path) -> LabeledFolder:
        root = Path(root)
        if problem := not_a_folder(root):
            raise InputError(f"labeled image folder {str(root)!r} {problem}", parameter="data")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        samples = [(image, name) for name in classes for image in find_images(root / name)]
        if not samples:
            raise InputError(
                f"labeled image folder {str(root)!r} has no images in class subfolders: "
                "expected root/<class>/<image>.jpg, one subfolder per class", parameter="data"
            )
        return cls(root, classes, samples)
