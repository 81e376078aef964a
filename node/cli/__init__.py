"""The ``guantong`` command: one sub-command module per group of tasks.

Each module in this package exposes ``register(subparsers)``, which adds its
commands and sets ``handler`` on them; a handler returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

from node.errors import GuantongError

# Order is the order shown in --help.
COMMAND_MODULES = (
    "certs",
    "run",
    "client",
    "records",
    "requests",
    "notices",
    "policy",
    "peers",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guantong",
        description=(
            "Guantong (贯通) federated exchange gateway: run a province's node, "
            "publish and read records, manage certificates and sharing agreements."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        import_module(f"node.cli.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GuantongError as exc:
        print(f"guantong: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): point stdout at /dev/null so the
        # flush at exit does not fail again, and stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
