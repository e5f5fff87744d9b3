"""What to classify: every image under a folder, or the paths a text file lists."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, Words
from ..imagefolder import IMAGE_SUFFIXES, find_images, holds_no_images

# A Dataset can only be passed to the API.
ACCEPTED = ("a folder of images", Words(", a text file listing image paths (one per line), or a ray.data.Dataset with "
                                        "a 'path' column", " or a text file listing image paths (one per line)"))


def image_paths(images: str | Path) -> list[str]:
    """Absolute paths, without repeats: a folder's images (recursive, sorted), or a text file's lines in order.

    Relative paths in a list file are relative to the file's folder, so a list moves with its images. Paths are
    made absolute because Ray's workers may not share the caller's working directory.
    """
    path = Path(images)
    if path.is_dir():
        found = [str(p) for p in find_images(path.absolute())]
        if not found:
            raise InputError(holds_no_images(path, "image folder"), parameter="images")
        return found
    if not path.is_file():
        raise InputError(f"images {str(path)!r} does not exist: pass ", *ACCEPTED, parameter="images")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"images {str(path)!r} is one image: pass ", *ACCEPTED, parameter="images")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"images {str(path)!r} is not a readable text file of image paths ({exc})",
                         parameter="images") from None
    base = path.absolute().parent
    listed = list(dict.fromkeys(str(base / line) for line in lines if line.strip()))
    if not listed:
        raise InputError(f"list file {str(path)!r} names no images: write one image path per line",
                         parameter="images")
    return listed
