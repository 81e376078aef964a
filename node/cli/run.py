"""``guantong node run``: serve one node until interrupted."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import structlog

from node.app import Node
from node.config import load_config
from node.logs import configure

log = structlog.get_logger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    node = commands.add_parser("node", help="run a node")
    sub = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="serve the federation API to peers and the local API to this bureau",
        description=(
            "Start a node from its config file and serve until SIGINT or SIGTERM. "
            "SIGHUP reloads the agreement files; an invalid file is refused and the "
            "last good agreements stay in force."
        ),
    )
    run.add_argument(
        "--config", type=Path, required=True, help="the node's YAML config"
    )
    run.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    run.add_argument(
        "--log-json", action="store_true", help="JSON log lines even on a terminal"
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    configure(args.log_level, json=True if args.log_json else None)
    node = Node(load_config(args.config))
    node.start()
    print(
        f"node {node.node_id} serving: federation {node.federation_address}, "
        f"local API {node.local_address}",
        flush=True,
    )

    def _stop(signum: int, _frame: object) -> None:
        log.info("node.signal", signal=signal.Signals(signum).name)
        node.stop()

    def _reload(_signum: int, _frame: object) -> None:
        node.reload_policies()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    node.wait()
    return 0
