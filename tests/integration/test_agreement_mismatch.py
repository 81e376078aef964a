"""Sender and receiver hold different versions of an agreement: the stricter
outcome wins, and the mismatch shows in both nodes' PolicyStatus and in
``guantong policy status`` on both."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from guantong.v1 import admin_pb2 as admin_api
from guantong.v1 import admin_pb2_grpc as admin_grpc
from guantong.v1 import local_pb2 as api
from structlog.testing import capture_logs

from node.app import Node
from node.cli import main
from node.storage import admin as admin_queries
from node.storage.schema import DEAD_LETTER
from node.storage.types import AgreementStamp
from tests.conftest import POLICIES, eventually
from tests.helpers import inbox, incident, local, pending, publish


def admin(node: Node) -> admin_grpc.AdminStub:
    return admin_grpc.AdminStub(grpc.insecure_channel(node.local_address))


def mismatches(node: Node) -> list[tuple[Any, ...]]:
    """(peer, agreement, ours, theirs, seen as, messages, refused, withheld)."""
    status = admin(node).PolicyStatus(admin_api.PolicyStatusRequest(), timeout=5)
    return [
        (
            m.peer,
            m.agreement_id,
            m.ours,
            m.theirs,
            m.seen_as,
            m.messages,
            m.refused,
            list(m.withheld_fields),
        )
        for m in status.mismatches
    ]


def status_lines(node: Node, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The mismatch lines ``guantong policy status`` prints for ``node``."""
    capsys.readouterr()
    assert main(["policy", "status", "--node-address", node.local_address]) == 0
    out = capsys.readouterr().out
    return [line for line in out.splitlines() if line.startswith("mismatch")]


def policies_at(
    tmp_path: Path, name: str, version: int = 1, addition: str = "", **edits: str
) -> Path:
    """A node's own copy of the agreements, central-china at ``version``."""
    folder = tmp_path / name
    shutil.copytree(POLICIES, folder, ignore=shutil.ignore_patterns("cases"))
    path = folder / "central-china.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("version: 1", f"version: {version}")
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text + addition, encoding="utf-8")
    return folder


WITHHOLD_ENTITIES = "\nwithhold:\n  - fields: [incident.entities]\n"
ONLY_LEVELS_1_2 = {"levels: [1, 2, 3]": "levels: [1, 2]"}


def start_pair(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path, receiver_policies: Path
) -> tuple[Node, Node]:
    """CN-HB on its own copy at version 1, CN-HN on ``receiver_policies``."""
    federation.policies = receiver_policies
    hn = federation.start("CN-HN", ("CN-HB",))
    federation.policies = policies_at(tmp_path, "sender")
    hb = federation.start("CN-HB", ("CN-HN",))
    return hb, hn


def logged(logs: list[dict[str, Any]], event: str, **fields: Any) -> list[dict]:
    return [
        entry
        for entry in logs
        if entry["event"] == event
        and all(entry.get(key) == value for key, value in fields.items())
    ]


def test_stricter_receiver_removes_the_extra_field_and_both_admins_see_it(
    federation, tmp_path, capsys
):
    stricter = policies_at(tmp_path, "stricter", 2, WITHHOLD_ENTITIES)
    hb, hn = start_pair(federation, tmp_path, stricter)

    with capture_logs() as logs:
        publish(hb, incident("HB-1", level=2))
        [message] = eventually(lambda: inbox(hn))
        eventually(lambda: pending(hb) == 0)

    # The receiver stored it without the field its copy withholds.
    assert list(message.record.incident.entities) == []
    assert message.record.incident.title == "事件 HB-1"
    assert list(message.envelope.withheld_fields) == ["incident.entities"]
    assert (message.envelope.agreement_id, message.envelope.agreement_version) == (
        "central-china",
        1,
    )
    [stricter_applied] = logged(logs, "policy.stricter_applied")
    assert stricter_applied["withheld"] == ["incident.entities"]

    # The receiver's answer told the sender, which logged it and kept it.
    [at_sender] = logged(logs, "policy.version_mismatch", peer="CN-HN")
    assert (at_sender["agreement"], at_sender["ours"], at_sender["theirs"]) == (
        "central-china",
        1,
        2,
    )
    assert at_sender["withheld"] == ["incident.entities"]
    assert at_sender["refused"] == 0
    [answer] = admin_queries.recent_answered(hb.store)
    assert (answer.peer_agreement_id, answer.peer_agreement_version) == (
        "central-china",
        2,
    )
    assert answer.withheld_by_peer == ("incident.entities",)

    assert mismatches(hn) == [("CN-HB", "central-china", 2, 1, "received", 1, 0, [])]
    assert mismatches(hb) == [
        ("CN-HN", "central-china", 1, 2, "sent", 1, 0, ["incident.entities"])
    ]
    [hb_line] = status_lines(hb, capsys)
    assert hb_line.startswith("mismatch: peer CN-HN enforces central-china v2, we v1 (")
    assert "it withheld incident.entities" in hb_line
    [hn_line] = status_lines(hn, capsys)
    assert hn_line.startswith("mismatch: peer CN-HB enforces central-china v1, we v2 (")


def test_stricter_receiver_refuses_and_both_admins_see_it(federation, tmp_path, capsys):
    stricter = policies_at(tmp_path, "stricter", 2, **ONLY_LEVELS_1_2)
    hb, hn = start_pair(federation, tmp_path, stricter)

    # Alone in its batch, HB-3 is refused as a whole batch: the results
    # travel in the trailer.
    with capture_logs() as logs:
        publish(hb, incident("HB-3", level=3))
        eventually(lambda: pending(hb) == 0)
    publish(hb, incident("HB-2", level=2))
    eventually(lambda: pending(hb) == 0)

    assert [m.envelope.ref for m in inbox(hn)] == ["HB-2"]
    [refusal] = hn.store.refusals()
    assert refusal.outcome == "refused_by_agreement"
    assert refusal.agreement == AgreementStamp("central-china", 1, 2)
    [at_receiver] = logged(logs, "policy.version_mismatch", peer="CN-HB")
    assert (at_receiver["ours"], at_receiver["theirs"]) == (2, 1)

    # The sender's row is a dead letter with the receiver's own reason.
    [dead] = admin_queries.recent_sent(hb.store, DEAD_LETTER)
    assert dead.outcome.startswith("REFUSED_BY_AGREEMENT: ")
    assert "central-china v2" in dead.outcome
    [counts] = local(hb).Status(api.StatusRequest(), timeout=5).peers
    assert (counts.delivered, counts.dead_letters) == (1, 1)
    [at_sender] = logged(logs, "policy.version_mismatch", peer="CN-HN")
    assert (at_sender["ours"], at_sender["theirs"], at_sender["refused"]) == (1, 2, 1)

    assert mismatches(hb) == [("CN-HN", "central-china", 1, 2, "sent", 2, 1, [])]
    assert mismatches(hn) == [("CN-HB", "central-china", 2, 1, "received", 2, 1, [])]
    [hb_line] = status_lines(hb, capsys)
    assert hb_line.startswith("mismatch: peer CN-HN enforces central-china v2, we v1 (")
    assert "1 refused there" in hb_line
    [hn_line] = status_lines(hn, capsys)
    assert hn_line.startswith("mismatch: peer CN-HB enforces central-china v1, we v2 (")
    assert "1 refused here" in hn_line


def test_a_batch_refused_in_part_answers_each_message(federation, tmp_path):
    stricter = policies_at(tmp_path, "stricter", 2, **ONLY_LEVELS_1_2)
    # CN-HB queues both while CN-HN is down, then sends them as one batch.
    federation.policies = policies_at(tmp_path, "sender")
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-3", level=3))
    publish(hb, incident("HB-2", level=2))
    federation.policies = stricter
    hn = federation.start("CN-HN", ("CN-HB",))
    eventually(lambda: pending(hb) == 0)

    assert [m.envelope.ref for m in inbox(hn)] == ["HB-2"]
    answers = admin_queries.recent_answered(hb.store)
    assert sorted((a.state, a.peer_agreement_version) for a in answers) == [
        ("DEAD_LETTER", 2),
        ("DELIVERED", 2),
    ]
    assert mismatches(hb) == [("CN-HN", "central-china", 1, 2, "sent", 2, 1, [])]
    assert mismatches(hn) == [("CN-HB", "central-china", 2, 1, "received", 2, 1, [])]


def test_same_versions_show_no_mismatch_on_either_side(federation, tmp_path, capsys):
    same = policies_at(tmp_path, "receiver", 1, **ONLY_LEVELS_1_2)
    hb, hn = start_pair(federation, tmp_path, same)

    with capture_logs() as logs:
        publish(hb, incident("HB-3", level=3))
        eventually(lambda: pending(hb) == 0)
        publish(hb, incident("HB-2", level=2))
        eventually(lambda: pending(hb) == 0)

    # Same version, other content: refused as before, but no mismatch.
    assert [m.envelope.ref for m in inbox(hn)] == ["HB-2"]
    assert logged(logs, "policy.version_mismatch") == []
    answers = admin_queries.recent_answered(hb.store)
    assert [(a.peer_agreement_id, a.peer_agreement_version) for a in answers] == [
        ("central-china", 1),
        ("central-china", 1),
    ]
    assert mismatches(hb) == [] and mismatches(hn) == []
    assert status_lines(hb, capsys) == [] and status_lines(hn, capsys) == []


def test_mismatch_clears_once_both_enforce_the_same_version(federation, tmp_path):
    stricter = policies_at(tmp_path, "stricter", 2, WITHHOLD_ENTITIES)
    sender = policies_at(tmp_path, "sender")
    federation.policies = stricter
    hn = federation.start("CN-HN", ("CN-HB",))
    federation.policies = sender
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1", level=2))
    eventually(lambda: len(inbox(hn)) == 1 and pending(hb) == 0)
    assert mismatches(hn) and mismatches(hb)

    # CN-HB rolls out the same version 2 and sends again.
    shutil.copy(stricter / "central-china.yaml", sender / "central-china.yaml")
    assert admin(hb).ReloadPolicies(admin_api.ReloadPoliciesRequest(), timeout=5).ok
    publish(hb, incident("HB-2", level=2))
    received = eventually(lambda: inbox(hn) if len(inbox(hn)) == 2 else None)
    eventually(lambda: pending(hb) == 0)

    assert received[1].envelope.agreement_version == 2
    assert list(received[1].envelope.withheld_fields) == ["incident.entities"]
    assert mismatches(hn) == []
    assert mismatches(hb) == []
