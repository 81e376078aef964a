"""Reaching a node's local API from the command line: the shared options,
the channel (plain on loopback, mutual TLS with a client certificate), and
one-line errors for failed calls."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc

from gateway.identity import TlsFiles, secure_channel
from node.errors import GuantongError

DEFAULT_ADDRESS = "127.0.0.1:7201"


def connection_options() -> argparse.ArgumentParser:
    """How to reach a node's local API: a parent parser for commands that do."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--node-address",
        default=DEFAULT_ADDRESS,
        help=f"the node's local API, host:port (default {DEFAULT_ADDRESS})",
    )
    common.add_argument(
        "--certs",
        type=Path,
        help=(
            "certificate folder; with --node and --client, use mutual TLS "
            "(needed off loopback)"
        ),
    )
    common.add_argument("--node", help="the node id whose client certificate to use")
    common.add_argument("--client", help="the client name of that certificate")
    return common


def count_arg(text: str) -> int:
    """argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def connect(args: argparse.Namespace) -> api_grpc.LocalStub:
    return api_grpc.LocalStub(local_channel(args))


def local_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to the node's local API, over mutual TLS when --certs is given."""
    if args.certs:
        if not (args.node and args.client):
            raise GuantongError(
                "--certs needs --node and --client to pick the certificate"
            )
        files = TlsFiles.for_client(args.certs, args.node, args.client)
        return secure_channel(args.node_address, files, expected_node_id=args.node)
    return grpc.insecure_channel(args.node_address)


def call(function, request, **kwargs):
    try:
        return function(request, **kwargs)
    except grpc.RpcError as error:
        raise GuantongError(describe_rpc_error(error)) from error


def describe_rpc_error(error: grpc.RpcError) -> str:
    """The status and details, with a hint where the cause is usually the setup."""
    text = f"{error.code().name}: {error.details()}"
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        text += (
            "\n  is the node running, and is --node-address its local API (not its "
            "federation port)? A local API on loopback is plain; off loopback it "
            "needs --certs, --node and --client."
        )
    return text


def node_id_of(stub: api_grpc.LocalStub) -> str:
    return call(stub.Status, api.StatusRequest(), timeout=30).node
