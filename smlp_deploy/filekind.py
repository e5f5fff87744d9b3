"""What a file's first bytes say it is, so that a loader can name what it was given.

Libraries fail on a file that is not theirs with their own internals (torch's unpickler: ``KeyError: 101``;
protobuf: "parsing failed"); each loader of this package asks here first and says, in words, what the file is
instead of what it expected.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

_HEAD = 512
_SIGNATURES = (  # (first bytes, kind, words)
    (b"\xff\xd8\xff", "jpeg", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "png", "a PNG image"),
    (b"GIF8", "gif", "a GIF image"),
)


@dataclass(frozen=True)
class FileKind:
    """``name`` for code: empty, text, zip, damaged-zip, torch, pickle, onnx, jpeg, png, gif, or unknown
    (binary data of no format known here); ``words`` for messages: "text ('hello')", "a zip archive (a.txt)"."""

    name: str
    words: str


def file_kind(path: str | Path) -> FileKind:
    """What the file at ``path`` looks like, from its first bytes (and, for a zip archive, its member names)."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(_HEAD)
    if not head:
        return FileKind("empty", "empty (0 bytes)")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return FileKind("pickle", "a Python pickle")
    for signature, name, words in _SIGNATURES:
        if head.startswith(signature):
            return FileKind(name, words)
    if _looks_like_onnx(head):
        return FileKind("onnx", "an ONNX model")
    text = _text(head)
    if text is not None:
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return FileKind("text", f"text ({first!r})" if first else "blank text")
    return FileKind("unknown", "binary data of no format known here")


def _zip_kind(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return FileKind("damaged-zip", "a damaged or truncated zip archive")
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return FileKind("torch", "a PyTorch checkpoint (a zip archive holding data.pkl)")
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return FileKind("zip", f"a zip archive ({shown or 'empty'})")


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto as exporters write it: field 1 (ir_version, a small varint), then a length-delimited
    field (producer name, opset import or graph)."""
    return len(head) > 3 and head[0] == 0x08 and 3 <= head[1] <= 20 and head[2] & 0x07 == 2


def _text(head: bytes) -> str | None:
    """``head`` as text when it is printable UTF-8 (a character cut at the end is allowed), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")
    return text if all(c.isprintable() or c in "\t\n\r\f" for c in text) else None
