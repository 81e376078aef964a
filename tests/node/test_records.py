"""Incident status and review, topic statements: the JSON shape, validation and
the facts agreements decide on."""

from __future__ import annotations

import pytest
from guantong.v1 import records_pb2 as pb

from node.errors import InvalidRecord
from node.record_json import record_from_json
from node.records import facts_of, validate
from tests.helpers import incident


def statement(**fields) -> dict:
    return {
        "ref": "S1",
        "kind": "statement",
        "text": "口径",
        "approved_by": "宣传处",
        **fields,
    }


def test_incident_is_open_unless_closed_with_its_review():
    _, opened = record_from_json(incident("I-1"), "CN-HB")
    _, closed = record_from_json(
        incident("I-1", status="closed", review="处置及时，口径统一"), "CN-HB"
    )

    assert opened.incident.status == pb.INCIDENT_OPEN
    assert closed.incident.status == pb.INCIDENT_CLOSED
    assert closed.incident.review == "处置及时，口径统一"


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"status": "closed"}, "incident.review"), ({"status": "shut"}, "status")],
)
def test_closing_without_a_review_or_with_an_unknown_status_is_refused(fields, field):
    with pytest.raises(InvalidRecord) as refused:
        record_from_json(incident("I-1", **fields), "CN-HB")
    assert refused.value.field == field


def test_topic_statement_carries_its_category_and_keywords():
    _, record = record_from_json(
        statement(category="food_drug_safety", keywords=["食品安全", "外卖"]), "CN-SH"
    )

    assert record.statement.topic_category == pb.FOOD_DRUG_SAFETY
    assert list(record.statement.topic_keywords) == ["食品安全", "外卖"]
    assert not record.statement.incident_subject


def test_topic_statement_is_judged_by_its_topic_category_with_no_level():
    _, record = record_from_json(statement(category="rumor"), "CN-SH")
    facts = facts_of(record, "CN-SH")
    assert (facts.kind, facts.category, facts.level) == ("statement", "rumor", None)


@pytest.mark.parametrize(
    "fields",
    [
        {"incident_ref": "I-1", "category": "rumor"},
        {"keywords": ["谣言"]},
        {"category": "weather"},
    ],
)
def test_statement_is_for_an_incident_or_a_known_topic_not_both(fields):
    with pytest.raises(InvalidRecord):
        record_from_json(statement(**fields), "CN-SH")


def test_statement_for_both_an_incident_and_a_topic_is_invalid_on_the_wire():
    record = pb.Record(
        statement=pb.ResponseStatement(
            text="口径",
            approved_by="处",
            incident_subject="CN-SH/I-1",
            topic_category=pb.RUMOR,
        )
    )
    with pytest.raises(InvalidRecord) as refused:
        validate(record)
    assert refused.value.field == "statement.topic_category"


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"to": "CN-HB"}, "to", "not to CN-HB itself"),
        (
            {"to": "CN-HN", "bogus_field": 1},
            "bogus_field",
            "is not a field of a joint_request",
        ),
    ],
)
def test_request_to_itself_or_with_unknown_keys_is_refused(extra, field, words):
    data = {
        "ref": "HB-1-R1",
        "kind": "joint_request",
        "incident_ref": "HB-1",
        "ask": "请核查",
    }
    with pytest.raises(InvalidRecord) as refused:
        record_from_json({**data, **extra}, "CN-HB")
    assert refused.value.field == field and words in refused.value.reason
