"""Sender and receiver hold different versions of an agreement: the stricter
outcome wins, and the mismatch shows in PolicyStatus."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
from guantong.v1 import admin_pb2 as admin_api
from guantong.v1 import admin_pb2_grpc as admin_grpc
from guantong.v1 import local_pb2 as api
from structlog.testing import capture_logs

from node.app import Node
from tests.conftest import POLICIES, eventually
from tests.helpers import inbox, incident, local, pending, publish


def admin(node: Node) -> admin_grpc.AdminStub:
    return admin_grpc.AdminStub(grpc.insecure_channel(node.local_address))


def mismatches(node: Node) -> list[tuple[str, str, int, int, str, int]]:
    status = admin(node).PolicyStatus(admin_api.PolicyStatusRequest(), timeout=5)
    return [
        (m.peer, m.agreement_id, m.ours, m.theirs, m.seen_as, m.messages)
        for m in status.mismatches
    ]


def central_china_v2(
    tmp_path: Path, name: str, addition: str = "", **edits: str
) -> Path:
    """A copy of the agreements with central-china at version 2, changed."""
    folder = tmp_path / name
    shutil.copytree(POLICIES, folder, ignore=shutil.ignore_patterns("cases"))
    path = folder / "central-china.yaml"
    text = path.read_text(encoding="utf-8").replace("version: 1", "version: 2")
    for old, new in edits.items():
        text = text.replace(old, new)
    path.write_text(text + addition, encoding="utf-8")
    return folder


def start_pair(federation, receiver_policies: Path) -> tuple[Node, Node]:  # type: ignore[no-untyped-def]
    """CN-HB on the shipped agreements, CN-HN on its own copy."""
    federation.policies = receiver_policies
    hn = federation.start("CN-HN", ("CN-HB",))
    federation.policies = POLICIES
    hb = federation.start("CN-HB", ("CN-HN",))
    return hb, hn


def test_stricter_receiver_removes_the_extra_field_and_reports_the_mismatch(
    federation, tmp_path
):
    stricter = central_china_v2(
        tmp_path, "stricter", "\nwithhold:\n  - fields: [incident.entities]\n"
    )
    hb, hn = start_pair(federation, stricter)

    with capture_logs() as logs:
        publish(hb, incident("HB-1", level=2))
        [message] = eventually(lambda: inbox(hn))

    assert list(message.record.incident.entities) == []
    assert message.record.incident.title == "事件 HB-1"
    assert list(message.envelope.withheld_fields) == ["incident.entities"]
    # Stamped with the version the sender sent it under.
    assert (message.envelope.agreement_id, message.envelope.agreement_version) == (
        "central-china",
        1,
    )
    events = {entry["event"]: entry for entry in logs}
    assert events["policy.version_mismatch"]["ours"] == 2
    assert events["policy.version_mismatch"]["theirs"] == 1
    assert events["policy.stricter_applied"]["withheld"] == ["incident.entities"]
    assert mismatches(hn) == [("CN-HB", "central-china", 2, 1, "received", 1)]


def test_stricter_receiver_refuses_and_the_sender_sees_the_mismatch(
    federation, tmp_path
):
    stricter = central_china_v2(
        tmp_path, "stricter", **{"levels: [1, 2, 3]": "levels: [1, 2]"}
    )
    hb, hn = start_pair(federation, stricter)

    publish(hb, incident("HB-3", level=3))
    publish(hb, incident("HB-2", level=2))
    eventually(lambda: pending(hb) == 0)

    assert [m.envelope.ref for m in inbox(hn)] == ["HB-2"]
    status = local(hn).Status(api.StatusRequest(), timeout=5)
    assert status.refused == 1
    [counts] = local(hb).Status(api.StatusRequest(), timeout=5).peers
    assert (counts.delivered, counts.dead_letters) == (1, 1)
    delivery = local(hb).Delivery(api.DeliveryRequest(ref="HB-3"), timeout=5)
    [to_hn] = [d for d in delivery.destinations if d.node == "CN-HN"]
    assert to_hn.delivery_state == "DEAD_LETTER"
    # The sender's admin sees the peer refusing under its version 2.
    assert mismatches(hb) == [("CN-HN", "central-china", 1, 2, "refused_by_peer", 1)]
    # The receiver's admin sees HB-2 arriving under version 1.
    assert mismatches(hn) == [("CN-HB", "central-china", 2, 1, "received", 1)]


def test_mismatch_clears_once_both_enforce_the_same_version(
    federation, tmp_path, policies_copy
):
    stricter = central_china_v2(
        tmp_path, "stricter", "\nwithhold:\n  - fields: [incident.entities]\n"
    )
    federation.policies = stricter
    hn = federation.start("CN-HN", ("CN-HB",))
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1", level=2))
    eventually(lambda: len(inbox(hn)) == 1)
    assert mismatches(hn)

    # CN-HB rolls out the same version 2 and sends again.
    shutil.copy(stricter / "central-china.yaml", policies_copy / "central-china.yaml")
    assert admin(hb).ReloadPolicies(admin_api.ReloadPoliciesRequest(), timeout=5).ok
    publish(hb, incident("HB-2", level=2))
    received = eventually(lambda: inbox(hn) if len(inbox(hn)) == 2 else None)

    assert received[1].envelope.agreement_version == 2
    assert list(received[1].envelope.withheld_fields) == ["incident.entities"]
    assert mismatches(hn) == []
    assert mismatches(hb) == []
