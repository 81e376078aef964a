"""Every field an agreement can withhold is absent at the receiver, over the wire.

Each case adds a ``withhold`` rule for one field to a copy of the shipped
agreements, publishes a record with every field set from a real node, and
reads what the real receiving node stored: the field is absent (not set, an
empty list), everything else arrived as published, and the envelope names
the field. A record that withholding leaves without substance is not sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from guantong.v1 import local_pb2 as api
from guantong.v1 import records_pb2 as pb

from gateway.policy import apply_withholding
from gateway.policy.fields import WITHHOLDABLE, withholdable_names
from node.app import Node
from node.record_json import record_from_json
from tests.conftest import eventually
from tests.helpers import inbox, incident, local, pending

# Withholding these leaves nothing of substance: the record is not sent.
NOT_SENT = {"statement.text", "joint_request.ask"}

# Per kind: sender, receiver, the agreement file that carries the flow.
ROUTES = {
    "incident": ("CN-HB", "CN-HN", "central-china.yaml"),
    "statement": ("CN-HB", "CN-HN", "central-china.yaml"),
    "joint_request": ("CN-HB", "CN-HN", "central-china.yaml"),
    "notice": ("CN", "CN-HB", "national-reporting.yaml"),
}

# Retractions are becoming versions of the subject they withdraw, routed by
# delivery history (node/holders.py, in progress); the wire case for
# retraction.reason belongs with that change (issue 4).
FIELDS = [name for name in withholdable_names() if not name.startswith("retraction.")]


def record_data(kind: str) -> dict[str, Any]:
    """A record of ``kind`` with every field that can be withheld set."""
    if kind == "incident":
        return incident("REC", level=2)
    if kind == "statement":
        return {
            "ref": "REC",
            "kind": "statement",
            "incident_ref": "INC",
            "text": "经核查，网传信息不实。",
            "approved_by": "新闻宣传处",
            "supersedes": "OLD-STATEMENT",
        }
    if kind == "joint_request":
        return {
            "ref": "REC",
            "kind": "joint_request",
            "incident_ref": "INC",
            "to": "CN-HN",
            "ask": "请核查涉事企业在湘门店",
            "due_within_hours": 2,
        }
    return {
        "ref": "REC",
        "kind": "notice",
        "title": "关于加强节日食品安全舆情监测的通报",
        "body": "各省局：请加强监测。",
        "to": ["CN-HB"],
    }


def is_set(body: Any, name: str) -> bool:
    return any(field.name == name for field, _ in body.ListFields())


def withhold(policies: Path, agreement_file: str, name: str) -> None:
    path = policies / agreement_file
    text = path.read_text(encoding="utf-8")
    assert "withhold:" not in text
    path.write_text(f"{text}\nwithhold:\n  - fields: [{name}]\n", encoding="utf-8")


def publish_record(node: Node, data: dict[str, Any]) -> pb.Record:
    ref, record = record_from_json(data, node.node_id)
    local(node).Publish(api.PublishRequest(ref=ref, record=record), timeout=10)
    return record


def test_every_withholdable_field_has_a_case():
    assert {name.partition(".")[0] for name in FIELDS} == set(ROUTES)
    assert set(FIELDS) | {f"retraction.{n}" for n in WITHHOLDABLE["retraction"]} == set(
        withholdable_names()
    )


@pytest.mark.parametrize("name", FIELDS)
def test_withheld_field_is_absent_at_the_receiver(federation, policies_copy, name):
    kind, _, field_name = name.partition(".")
    sender_id, receiver_id, agreement_file = ROUTES[kind]
    withhold(policies_copy, agreement_file, name)
    federation.policies = policies_copy
    receiver = federation.start(receiver_id, (sender_id,))
    sender = federation.start(sender_id, (receiver_id,))

    if kind in ("statement", "joint_request"):
        publish_record(sender, incident("INC", level=2))
    if kind == "statement":
        # The statement the sample one supersedes must exist.
        old = {**record_data(kind), "ref": "OLD-STATEMENT"}
        del old["supersedes"]
        publish_record(sender, old)
    published = publish_record(sender, record_data(kind))
    assert is_set(getattr(published, kind), field_name), (
        f"the sample {kind} must set {field_name} for this case to mean anything"
    )
    eventually(lambda: pending(sender) == 0)
    received = {m.envelope.ref: m for m in inbox(receiver)}

    if name in NOT_SENT:
        assert apply_withholding(published, [name]) is None
        assert "REC" not in received
        delivery = local(sender).Delivery(api.DeliveryRequest(ref="REC"), timeout=5)
        [to_receiver] = [d for d in delivery.destinations if d.node == receiver_id]
        assert (to_receiver.allowed, to_receiver.rule) == (
            False,
            "nothing-left-after-withholding",
        )
        return

    message = received["REC"]
    body = getattr(message.record, kind)
    assert not is_set(body, field_name)
    assert message.record == apply_withholding(published, [name])
    assert list(message.envelope.withheld_fields) == [name]
