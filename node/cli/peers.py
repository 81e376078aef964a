"""``guantong peers resend PEER``: send a peer everything again."""

from __future__ import annotations

import argparse

from guantong.v1 import admin_pb2 as admin
from guantong.v1 import admin_pb2_grpc as admin_grpc

from node.cli.connection import call, connection_options, local_channel


def register(commands: argparse._SubParsersAction) -> None:
    peers = commands.add_parser("peers", help="manage what goes to a peer")
    sub = peers.add_subparsers(dest="peers_command", metavar="ACTION", required=True)
    resend = sub.add_parser(
        "resend",
        parents=[connection_options()],
        help="queue everything ever sent to a peer again",
        description=(
            "Set every message delivered or dead-lettered to PEER back to pending, "
            "oldest first, and wake its sender: for a peer that restored an empty "
            "database. The peer gets the same messages, as the same bytes; what "
            "it already holds it answers as a duplicate."
        ),
    )
    resend.add_argument("peer", metavar="PEER", help="the peer's node id, e.g. CN-HN")
    resend.set_defaults(handler=_resend)


def _resend(args: argparse.Namespace) -> int:
    stub = admin_grpc.AdminStub(local_channel(args))
    response = call(stub.Resend, admin.ResendRequest(peer=args.peer), timeout=30)
    print(f"re-queued {response.requeued} message(s) for {response.peer}")
    return 0
