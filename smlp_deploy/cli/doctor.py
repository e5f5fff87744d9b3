"""smlp-doctor: what this machine can do with smlp-deploy, and for what it cannot, the install or the reason."""

from __future__ import annotations

import argparse
import json
import sys

from ..checkup import CAPABILITIES, doctor, format_report
from ..records import to_json
from .common import run_main


def _keys(text: str) -> tuple[str, ...]:
    keys = tuple(k for k in text.split(",") if k)
    unknown = [k for k in keys if k not in CAPABILITIES]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(CAPABILITIES)}, got {text!r}")
    return keys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smlp-doctor", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    p.add_argument("--require", type=_keys, default=(), metavar="CAPABILITY[,...]",
                   help=f"exit with status 1 unless these are ready: {', '.join(CAPABILITIES)}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = doctor()
    print(json.dumps(to_json(report), indent=1) if args.json else format_report(report))
    missing = [report.capability(key) for key in args.require if not report.capability(key).ready]
    for capability in missing:
        print(f"not ready: {capability.name} ({capability.key}): {capability.needs}", file=sys.stderr)
    return 1 if missing else 0


entry_point = run_main(main)
