"""Commands that talk to a running node's local API: publish, inbox, watch,
delivery, status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from guantong.v1 import local_pb2 as api

from node.cli.connection import (
    call,
    connect,
    connection_options,
    count_arg,
    describe_rpc_error,
    node_id_of,
)
from node.cli.output import print_destinations, print_message
from node.errors import GuantongError, InvalidRecord
from node.local_api import MAX_PAGE
from node.record_json import record_from_json
from node.records import CATEGORIES, LEVEL_LABELS, PHASES


def register(commands: argparse._SubParsersAction) -> None:
    common = connection_options()

    publish = commands.add_parser(
        "publish",
        parents=[common],
        help="publish a record through the node",
        description=(
            "Publish a record. Give a JSON file with one record in the shape of "
            "examples/incidents-2025.jsonl (a .jsonl file with --ref picks one line), "
            "or the flags for an incident."
        ),
    )
    publish.add_argument(
        "--file", type=Path, help="a .json record, or a .jsonl with --ref"
    )
    publish.add_argument("--ref", help="the publisher's reference")
    publish.add_argument(
        "--origin",
        help="the publishing node's id, checked against the node at --node-address",
    )
    publish.add_argument("--title")
    publish.add_argument("--summary", default="")
    publish.add_argument("--category", choices=sorted(CATEGORIES))
    publish.add_argument("--level", type=int, choices=sorted(LEVEL_LABELS))
    publish.add_argument("--phase", choices=sorted(PHASES), default="emerging")
    publish.add_argument("--region", action="append", default=[], dest="regions")
    publish.add_argument("--exercise", action="store_true", help="mark as a drill")
    publish.add_argument("--author-unit", default="")
    publish.set_defaults(handler=_publish)

    inbox = commands.add_parser(
        "inbox", parents=[common], help="list what this node has received"
    )
    inbox.add_argument(
        "--after", type=count_arg, default=0, help="log position to start after"
    )
    inbox.add_argument(
        "--limit",
        type=count_arg,
        default=100,
        help=f"at most this many (up to {MAX_PAGE})",
    )
    inbox.add_argument(
        "--json", action="store_true", help="one JSON object per message"
    )
    inbox.set_defaults(handler=_inbox)

    watch = commands.add_parser(
        "watch", parents=[common], help="stream what this node receives, as it arrives"
    )
    watch.add_argument(
        "--after", type=count_arg, default=0, help="log position to start after"
    )
    watch.add_argument(
        "--json", action="store_true", help="one JSON object per message"
    )
    watch.set_defaults(handler=_watch)

    delivery = commands.add_parser(
        "delivery",
        parents=[common],
        help="where one of this node's records went, and why not elsewhere",
    )
    delivery.add_argument("ref")
    delivery.set_defaults(handler=_delivery)

    status = commands.add_parser(
        "status", parents=[common], help="counts and per-peer delivery state"
    )
    status.set_defaults(handler=_status)


def _publish(args: argparse.Namespace) -> int:
    stub = connect(args)
    node_id = node_id_of(stub)
    ref, record = _record_from_args(args, node_id)
    response = call(
        stub.Publish,
        api.PublishRequest(ref=ref, author_unit=args.author_unit, record=record),
        timeout=30,
    )
    print(
        f"published {response.subject_id} version {response.subject_version} "
        f"(message {response.message_id})"
    )
    print_destinations(response.destinations)
    return 0


def _record_from_args(args: argparse.Namespace, node_id: str) -> tuple[str, Any]:
    """The record to publish; refuses one that names another publishing node."""
    if args.file:
        data = _read_record_file(args.file, args.ref)
    else:
        if not (args.ref and args.title and args.category and args.level):
            raise GuantongError(
                "give --file, or --ref, --title, --category and --level"
            )
        data = {
            "ref": args.ref,
            "kind": "incident",
            "title": args.title,
            "summary": args.summary,
            "category": args.category,
            "level": args.level,
            "phase": args.phase,
            "regions": args.regions,
            "exercise": args.exercise,
        }
    for claimed, source in (
        (args.origin, "--origin"),
        (data.get("node"), "the record's 'node'"),
    ):
        if claimed and claimed != node_id:
            raise GuantongError(
                f"{source} says {claimed}, but the node at {args.node_address} "
                f"is {node_id}; "
                "a node publishes only its own records"
            )
    try:
        return record_from_json(data, node_id)
    except InvalidRecord as exc:
        raise GuantongError(f"{args.file or 'record'}: {exc}") from exc


def _read_record_file(path: Path, ref: str | None) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GuantongError(f"{path}: cannot read: {exc.strerror}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for number, line in enumerate(
        lines if path.suffix == ".jsonl" else [text], start=1
    ):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise GuantongError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise GuantongError(
                f"{path}:{number}: a record is a JSON object, "
                f"not {type(record).__name__}"
            )
    if path.suffix != ".jsonl":
        return records[0]
    if not ref:
        raise GuantongError(f"{path} holds {len(records)} records; pick one with --ref")
    matches = [r for r in records if r.get("ref") == ref]
    if not matches:
        raise GuantongError(f"{path}: no record with ref {ref!r}")
    return matches[0]


def _inbox(args: argparse.Namespace) -> int:
    stub = connect(args)
    response = call(
        stub.Inbox,
        api.InboxRequest(after_seq=args.after, limit=args.limit),
        timeout=30,
    )
    for message in response.messages:
        print_message(message, args.json)
    if not args.json:
        print(f"{len(response.messages)} message(s)")
        if response.messages:
            last = response.messages[-1].seq
            more = call(
                stub.Inbox, api.InboxRequest(after_seq=last, limit=1), timeout=30
            )
            if more.messages:
                print(f"there is more: guantong inbox --after {last}")
    return 0


WATCH_RECONNECT_MAX_S = 10.0


def _watch(args: argparse.Namespace) -> int:
    """Stream the inbox; across a node restart, reconnect and resume after the
    last message shown, so nothing is skipped and nothing shown twice."""
    after = args.after
    wait_s = 0.5
    stub = connect(args)
    while True:
        stream = stub.Watch(api.InboxRequest(after_seq=after))
        try:
            for message in stream:
                print_message(message, args.json)
                sys.stdout.flush()
                after = message.seq
                wait_s = 0.5
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise GuantongError(describe_rpc_error(error)) from error
            print(
                f"guantong: node unavailable, reconnecting in {wait_s:.1f} s "
                f"(resuming after {after})",
                file=sys.stderr,
            )
        except KeyboardInterrupt:
            stream.cancel()
            return 0
        try:
            time.sleep(wait_s)
        except KeyboardInterrupt:
            return 0
        wait_s = min(wait_s * 2, WATCH_RECONNECT_MAX_S)


def _delivery(args: argparse.Namespace) -> int:
    response = call(
        connect(args).Delivery, api.DeliveryRequest(ref=args.ref), timeout=30
    )
    print(f"{response.subject_id} version {response.subject_version}")
    print_destinations(response.destinations)
    return 0


def _status(args: argparse.Namespace) -> int:
    response = call(connect(args).Status, api.StatusRequest(), timeout=30)
    print(
        f"node {response.node}: published {response.published}, "
        f"received {response.received}, refused {response.refused}"
    )
    for peer in response.peers:
        line = (
            f"  {peer.node}: pending {peer.pending}, delivered {peer.delivered}, "
            f"dead letters {peer.dead_letters}"
        )
        if peer.failed_attempts:
            line += (
                f", backing off after {peer.failed_attempts} failure(s): "
                f"{peer.last_error}"
            )
        print(line)
    return 0
