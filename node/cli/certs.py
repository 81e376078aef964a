"""``guantong certs``: create the federation CA and issue certificates.

``certs init`` makes the CA once per federation; ``certs issue --node CN-HB``
issues (or reissues, to rotate) a node's certificate, and with ``--client``
one for a local client of that node. Paths written are printed, keys never.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.identity.pki import (
    CaFiles,
    CertFiles,
    init_ca,
    issue_client_cert,
    issue_node_cert,
)
from node.errors import GuantongError

DEFAULT_DIR = Path("certs/dev")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``certs init`` and ``certs issue`` to the ``guantong`` command."""
    certs = subparsers.add_parser("certs", help="create the CA and issue certificates")
    commands = certs.add_subparsers(
        dest="certs_command", metavar="SUBCOMMAND", required=True
    )

    init = commands.add_parser("init", help="create the federation CA")
    _add_dir(init)
    init.add_argument(
        "--force", action="store_true", help="replace an existing CA (distrusts all)"
    )
    init.set_defaults(handler=run_init)

    issue = commands.add_parser("issue", help="issue a node or client certificate")
    issue.add_argument("--node", required=True, metavar="ID", help="e.g. CN-HB")
    issue.add_argument("--client", metavar="NAME", help="issue for a local client")
    issue.add_argument(
        "--host",
        action="append",
        default=[],
        help="extra DNS name or IP address of the node (repeatable)",
    )
    _add_dir(issue)
    issue.set_defaults(handler=run_issue)


def run_init(args: argparse.Namespace) -> int:
    """Create the CA in ``--dir``."""
    _print_paths(init_ca(args.dir, overwrite=args.force))
    return 0


def run_issue(args: argparse.Namespace) -> int:
    """Issue a node certificate, or a client one when ``--client`` is given."""
    if args.client is not None and args.host:
        raise GuantongError("--host applies to node certificates, not to --client")
    if args.client is None:
        files = issue_node_cert(args.dir, args.node, hosts=args.host)
    else:
        files = issue_client_cert(args.dir, args.node, args.client)
    _print_paths(files)
    return 0


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"certificate directory (default: {DEFAULT_DIR})",
    )


def _print_paths(files: CaFiles | CertFiles) -> None:
    print(f"certificate: {files.cert}")
    print(f"private key: {files.key}")
