"""What a publish refuses so that no record goes where its agreements or its
earlier versions do not lead, and no history is overwritten."""

from __future__ import annotations

import grpc
import pytest
from guantong.v1 import local_pb2 as api

from node.errors import InvalidRecord
from node.record_json import record_from_json
from tests.conftest import eventually
from tests.helpers import inbox, incident, local, publish


def refused(node, data) -> str:
    with pytest.raises(grpc.RpcError) as error:
        publish(node, data)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error.value.details()


def request(to: str, ask: str = "请核查") -> dict:
    return {
        "ref": "R1",
        "kind": "joint_request",
        "incident_ref": "INC",
        "to": to,
        "ask": ask,
    }


def statement(ref: str, **extra) -> dict:
    return {
        "ref": ref,
        "kind": "statement",
        "incident_ref": "INC",
        "text": "口径",
        "approved_by": "新闻宣传处",
        **extra,
    }


@pytest.fixture
def hb(federation):
    node = federation.start("CN-HB", ("CN-HN", "CN-JX", "CN"))
    publish(node, incident("INC", level=2))
    return node


def test_a_request_cannot_be_readdressed_by_a_new_version(hb):
    publish(hb, request("CN-HN"))
    details = refused(hb, request("CN-JX", ask="改为江西"))
    assert details.startswith("joint_request.to_node:")
    assert "addressees of a request or notice cannot change" in details


def test_a_notice_cannot_be_readdressed_by_a_new_version(federation):
    cn = federation.start("CN", ("CN-HB", "CN-JX"))
    publish(cn, {"ref": "N1", "kind": "notice", "title": "通报", "to": ["CN-HB"]})
    details = refused(
        cn, {"ref": "N1", "kind": "notice", "title": "通报2", "to": ["CN-JX"]}
    )
    assert details.startswith("notice.to_nodes:")


def test_a_province_cannot_send_a_notice(hb):
    details = refused(
        hb, {"ref": "N1", "kind": "notice", "title": "通报", "to": ["CN-HN"]}
    )
    assert "no agreement lets this notice reach anyone" in details


def test_a_request_no_agreement_carries_is_refused(hb):
    details = refused(hb, request("CN"))
    assert "no agreement lets this joint_request reach anyone" in details


def test_closing_twice_keeps_the_first_review(hb):
    local(hb).CloseIncident(
        api.CloseIncidentRequest(ref="INC", review="复盘一"), timeout=5
    )
    with pytest.raises(grpc.RpcError) as error:
        local(hb).CloseIncident(
            api.CloseIncidentRequest(ref="INC", review="再来"), timeout=5
        )
    assert "already closed" in error.value.details()


@pytest.mark.parametrize(
    ("supersedes", "words"),
    [
        ("S1", "cannot supersede itself"),
        ("NOPE", "is not a statement of CN-HB"),
        ("INC", "is not a statement but the incident"),
    ],
)
def test_a_statement_supersedes_only_another_held_statement(hb, supersedes, words):
    details = refused(hb, statement("S1", supersedes=supersedes))
    assert details.startswith("statement.supersedes:") and words in details


def test_a_retraction_needs_a_reason(hb):
    with pytest.raises(grpc.RpcError) as error:
        local(hb).Retract(api.RetractRequest(ref="INC", reason=" "), timeout=5)
    assert error.value.details().startswith("retraction.reason:")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"summary": "很" * 20_001}, "incident.summary: at most 20000 characters"),
        ({"title": "标" * 201}, "incident.title: at most 200 characters"),
        ({"keywords": ["词"] * 101}, "incident.keywords: at most 100 items"),
    ],
)
def test_oversized_record_is_refused_naming_the_field(change, field):
    with pytest.raises(InvalidRecord) as error:
        record_from_json(incident("BIG", **change), "CN-HB")
    assert str(error.value).startswith(field)


def test_inbox_pages_stay_under_the_message_limit(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    for i in range(80):
        publish(hb, incident(f"HB-{i:02d}", summary="很" * 19_000))
    # 80 records of ~57 KB each do not fit one 4 MiB reply: pages split them.
    eventually(lambda: len(inbox(hn)) == 80)
    first = local(hn).Inbox(api.InboxRequest(after_seq=0, limit=1000), timeout=10)
    assert 0 < len(first.messages) < 80
    assert first.ByteSize() < 4 * 1024 * 1024


def test_overlong_search_is_refused_not_an_sql_error(hb):
    with pytest.raises(grpc.RpcError) as error:
        local(hb).SearchStatements(
            api.SearchStatementsRequest(text="食" * 5000), timeout=5
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("text: at most 200 characters")
