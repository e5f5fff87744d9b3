"""What TensorRT documents it accepts, kept as data with its source: ONNX-TensorRT's operator support matrix,
trtexec's command-line options, and the names TensorRT's Python bindings define, per TensorRT release.

No TensorRT or GPU is available to this project's machines, so what its parser and trtexec accept is checked
against their own documentation. Both tables live in ``tests/data/tensorrt/``; each entry records the repository,
ref, commit and file it was read from, and this script rewrites an entry from a fetched copy of the repository
(a git directory, bare or not) or, where only a copy of the file exists, from that file::

    python -m tests.tensorrt_tables operators --git ONNX_TENSORRT_GIT --ref release/10.1-GA --release 10.1 \\
        --stands-for "TensorRT 10.1"
    python -m tests.tensorrt_tables trtexec --git TENSORRT_GIT --ref release/11.0 --release 11.0
    python -m tests.tensorrt_tables bindings --git TENSORRT_GIT --ref release/11.0 --release 11.0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data" / "tensorrt"
OPERATORS_JSON = DATA / "onnx_operators.json"
TRTEXEC_JSON = DATA / "trtexec_options.json"
BINDINGS_JSON = DATA / "python_bindings.json"
OPERATORS_MD = "docs/operators.md"
SAMPLE_OPTIONS = "samples/common/sampleOptions.cpp"
BINDINGS_SOURCE = "python/src"
# pybind11 definitions: .def("x"), .def_property("x"), .def_readwrite("x"), .value("X"), and the classes and enums
# (py::class_<T>(m, "X") or {m, "X"}).
BINDING = re.compile(
    r'(?:\.def\w*|\.value|py::(?:class_|enum_)<[^;]*?>\s*\w*\s*[({])\s*\(?\s*(?:\w+\s*,\s*)?"(\w+)"', re.S)


@dataclass(frozen=True)
class Operator:
    supported: bool
    types: tuple[str, ...]  # the "Supported Types" column: FP32, FP16, BF16, INT32, INT64, INT8, BOOL, ...
    restrictions: str


@dataclass(frozen=True)
class OperatorTable:
    release: str  # the TensorRT release the table documents ("10.0")
    stands_for: str  # which TensorRT versions this repository checks against it
    source: dict[str, str | None]  # repository, ref, commit, file, sha256 (and how it was retrieved)
    opsets: tuple[int, int]  # the inclusive opset range of the file's header
    operators: dict[str, Operator]


def load_operator_tables(path: Path = OPERATORS_JSON) -> list[OperatorTable]:
    data = json.loads(path.read_text())
    return [OperatorTable(t["release"], t["stands_for"], t["source"], tuple(t["opsets"]),
                          {name: Operator(o["supported"], tuple(o["types"]), o["restrictions"])
                           for name, o in t["operators"].items()})
            for t in data["tables"]]


def parse_operators_md(text: str) -> tuple[tuple[int, int], dict[str, Operator]]:
    """The opset range and rows of ONNX-TensorRT's ``docs/operators.md``.

    Rows have two to four cells and sometimes no closing ``|`` (``| LayerNormalization | Y | FP32, FP16, BF16``);
    type lists sometimes carry an empty item or a missing comma (``INT32, INT64, , UINT8``, ``INT64 BOOL``).
    """
    header = re.search(r"supports operators in the inclusive range of opset (\d+) to opset (\d+)", text)
    if header is None:
        raise ValueError("no 'supports operators in the inclusive range of opset A to opset B' sentence")
    rows: dict[str, Operator] = {}
    table = text[text.index("## Operator Support Matrix"):]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or cells[1] not in ("Y", "N"):
            continue  # the header, the separator, prose
        types = tuple(t for t in re.split(r"[,\s]+", cells[2]) if t) if len(cells) > 2 else ()
        rows[cells[0]] = Operator(cells[1] == "Y", types, " | ".join(c for c in cells[3:] if c))
    if not rows:
        raise ValueError("no operator rows under '## Operator Support Matrix'")
    return (int(header[1]), int(header[2])), rows


def trtexec_flags(source: str) -> list[str]:
    """Every option trtexec parses or documents in ``sampleOptions.cpp``: ``getAndDel*Option(arguments, "--x"``
    calls and the ``--x`` entries of its help text. Options of the safety tools (``SafeBuilderOptions``,
    ``TaskInferenceOptions``) are left out: trtexec itself rejects them."""
    kept = _without_safety_sections(source)
    parsed = re.findall(r'getAndDel\w*Option\w*\(\s*\w+\s*,\s*"(--[A-Za-z0-9]+)"', kept)
    documented = re.findall(r'"\s+(--[A-Za-z][A-Za-z0-9]*)[=\s"]', kept)
    return sorted(set(parsed) | set(documented))


def binding_names(source: str) -> list[str]:
    """Every name the pybind11 sources define: classes, enums and their values, methods, properties."""
    return sorted(set(BINDING.findall(source)))


def _without_safety_sections(source: str) -> str:
    """``sampleOptions.cpp`` without the functions of the safety tools' option classes."""
    out, skip_depth, depth = [], None, 0
    for line in source.splitlines():
        starts = re.match(r"\s*\w+\s+(SafeBuilderOptions|TaskInferenceOptions)::\w+\(", line)
        if starts and skip_depth is None:
            skip_depth = depth
        depth += line.count("{") - line.count("}")
        if skip_depth is None:
            out.append(line)
        elif depth <= skip_depth and "}" in line:
            skip_depth = None
    return "\n".join(out)


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir" if (git_dir / "HEAD").is_file() else "-C", str(git_dir), *args],
                          capture_output=True, text=True, check=True).stdout


def _read_source(args: argparse.Namespace, file: str) -> tuple[str, dict[str, str | None]]:
    """The text of ``file`` (a folder: its C++ files, concatenated) and where it comes from."""
    if args.git:
        commit = _git(args.git, "rev-parse", f"{args.ref}^{{commit}}").strip()
        files = [f for f in _git(args.git, "ls-tree", "-r", "--name-only", commit, file).split()
                 if f == file or f.endswith((".cpp", ".h"))]
        text = "".join(_git(args.git, "show", f"{commit}:{f}") for f in files)
        source = {"repository": args.repository, "ref": args.ref, "commit": commit, "file": file}
    else:
        text = args.file.read_text(encoding="utf-8")
        source = {"repository": args.repository, "ref": args.ref, "commit": args.commit, "file": file,
                  "retrieved": args.retrieved}
    source["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return text, source


def _replace_entry(path: Path, key: str, entry: dict) -> None:
    """Put ``entry`` into the list ``key`` of the JSON file, replacing the one for the same release."""
    data = json.loads(path.read_text())
    entries = [e for e in data[key] if e["release"] != entry["release"]] + [entry]
    data[key] = sorted(entries, key=lambda e: tuple(int(p) for p in e["release"].split(".")))
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["operators", "trtexec", "bindings"])
    parser.add_argument("--release", required=True, help="the TensorRT release the source documents, e.g. 10.1")
    parser.add_argument("--stands-for", help="operators: which TensorRT versions are checked against this table")
    parser.add_argument("--git", type=Path, help="a fetched copy of the repository (git directory)")
    parser.add_argument("--ref", help="branch, tag or commit in --git")
    parser.add_argument("--file", type=Path, help="instead of --git: a copy of the file")
    parser.add_argument("--commit", help="with --file: the commit it was taken from, if known")
    parser.add_argument("--retrieved", help="with --file: where the copy comes from")
    args = parser.parse_args(argv)
    if bool(args.git) == bool(args.file) or (args.git and not args.ref):
        parser.error("give --git DIR --ref REF, or --file PATH")
    if args.table == "operators":
        args.repository = "onnx/onnx-tensorrt"
        text, source = _read_source(args, OPERATORS_MD)
        opsets, rows = parse_operators_md(text)
        entry = {"release": args.release, "stands_for": args.stands_for or f"TensorRT {args.release}",
                 "source": source, "opsets": list(opsets),
                 "operators": {name: {"supported": o.supported, "types": list(o.types), "restrictions": o.restrictions}
                               for name, o in rows.items()}}
        _replace_entry(OPERATORS_JSON, "tables", entry)
        print(f"{OPERATORS_JSON}: TensorRT {args.release}, opsets {opsets[0]}-{opsets[1]}, {len(rows)} operators")
    else:
        args.repository = "NVIDIA/TensorRT"
        path, file, key, extract = {"trtexec": (TRTEXEC_JSON, SAMPLE_OPTIONS, "flags", trtexec_flags),
                                    "bindings": (BINDINGS_JSON, BINDINGS_SOURCE, "names", binding_names)}[args.table]
        text, source = _read_source(args, file)
        names = extract(text)
        _replace_entry(path, "releases", {"release": args.release, "source": source, key: names})
        print(f"{path}: TensorRT {args.release}, {len(names)} {key}")


if __name__ == "__main__":
    main()
