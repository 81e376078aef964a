"""``guantong demo``: run the demo federation on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.demo import run_demo
from node.logs import configure

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a seven-node demo federation and publish the sample records",
        description=(
            "Start CN, CN-HB, CN-HN, CN-JX, CN-SH, CN-JS and CN-GS as separate "
            "processes on loopback with a fresh development CA, publish every record "
            "of the sample file, wait for delivery to settle, print who received "
            "what and why not, and stop. The last line printed is the path of the "
            "JSON summary."
        ),
    )
    demo.add_argument(
        "--records",
        type=Path,
        default=PROJECT_ROOT / "examples" / "incidents-2025.jsonl",
    )
    demo.add_argument("--policies", type=Path, default=PROJECT_ROOT / "policies")
    demo.add_argument("--work-dir", type=Path, default=PROJECT_ROOT / "var" / "demo")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    # The nodes log to their own files; the demo itself speaks only when wrong.
    configure("warning")
    summary = run_demo(args.records, args.policies, args.work_dir)
    print(summary)
    return 0
