"""Small helpers the tests share: talking to a node's local API."""

from __future__ import annotations

import json
from typing import Any

import grpc
from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc

from node.app import Node
from node.record_json import record_from_json
from tests.conftest import SAMPLE


def local(node: Node) -> api_grpc.LocalStub:
    return api_grpc.LocalStub(grpc.insecure_channel(node.local_address))


def incident(
    ref: str, level: int = 2, category: str = "food_drug_safety", **fields: Any
) -> dict[str, Any]:
    return {
        "ref": ref,
        "kind": "incident",
        "title": f"事件 {ref}",
        "summary": "涉事食品安全问题的摘要",
        "category": category,
        "level": level,
        "phase": "developing",
        "regions": ["420000"],
        "entities": ["某公司"],
        "platforms": [{"name": "微博", "views": 1000, "reposts": 10, "comments": 5}],
        "keywords": ["食品安全"],
        "first_seen": "2025-07-01T08:00:00+08:00",
        "exercise": False,
        **fields,
    }


def publish(node: Node, data: dict[str, Any]) -> api.PublishResponse:
    ref, record = record_from_json(data, node.node_id)
    return local(node).Publish(api.PublishRequest(ref=ref, record=record), timeout=10)


def inbox(node: Node) -> list[api.StoredMessage]:
    messages: list[api.StoredMessage] = []
    after = 0
    while True:
        page = (
            local(node)
            .Inbox(api.InboxRequest(after_seq=after, limit=500), timeout=10)
            .messages
        )
        if not page:
            return messages
        messages.extend(page)
        after = page[-1].seq


def inbox_refs(node: Node) -> list[str]:
    return [m.envelope.ref for m in inbox(node)]


def pending(node: Node) -> int:
    status = local(node).Status(api.StatusRequest(), timeout=10)
    return sum(peer.pending for peer in status.peers)


def sample_records() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in SAMPLE.read_text("utf-8").splitlines()
        if line.strip()
    ]
