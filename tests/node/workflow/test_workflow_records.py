"""The workflow record kinds: their facts (what agreements decide on), their
validation, and the sample shape of a request's deadline."""

from __future__ import annotations

import pytest
from guantong.v1 import records_pb2 as pb

from node.errors import InvalidRecord
from node.record_json import record_from_json
from node.records import KIND_NAMES, KINDS, facts_of, incident_subject_of, validate

DRILL = pb.IncidentReport(
    title="【演练】扶梯故障",
    category=pb.SPECIAL_EQUIPMENT,
    level=pb.LEVEL_2,
    exercise=True,
    platforms=[pb.PlatformHeat(name="抖音", views=2_600_000, reposts=18_000)],
)


def update(**fields: object) -> pb.Record:
    values = {
        "request_subject": "CN-HB/HB-DRILL-01-R1",
        "incident_subject": "CN-HB/HB-DRILL-01",
        "to_node": "CN-HB",
        "action": pb.ACTION_ACKNOWLEDGE,
        **fields,
    }
    return pb.Record(request_update=pb.RequestUpdate(**values))


def test_the_new_kinds_have_names_both_ways():
    for name in ("request_update", "notice_ack", "escalation"):
        assert KIND_NAMES[KINDS[name]] == name


def test_an_update_is_judged_by_its_requests_incident_and_goes_to_the_other_party():
    record = update()
    assert incident_subject_of(record) == "CN-HB/HB-DRILL-01"
    facts = facts_of(record, "CN-HN", DRILL)
    assert (facts.kind, facts.category, facts.level) == (
        "request_update",
        "special_equipment",
        2,
    )
    assert facts.exercise and facts.views == 2_600_000
    assert facts.addressed_to == ("CN-HB",)


def test_an_update_from_a_handler_without_the_incident_has_no_incident_facts():
    facts = facts_of(update(), "CN-HN", None)
    assert (facts.category, facts.level, facts.exercise) == (None, None, False)
    assert facts.addressed_to == ("CN-HB",)


def test_an_acknowledgement_goes_back_to_the_notices_origin():
    record = pb.Record(notice_ack=pb.NoticeAck(notice_subject="CN/TB-1"))
    assert facts_of(record, "CN-HB").addressed_to == ("CN",)


def test_an_escalation_is_judged_by_the_incident_it_carries():
    record = pb.Record(
        escalation=pb.Escalation(
            incident_subject="CN-HB/HB-DRILL-01",
            to_node="CN",
            reason="急",
            incident=DRILL,
        )
    )
    assert incident_subject_of(record) is None
    facts = facts_of(record, "CN-HB")
    assert (facts.category, facts.level, facts.exercise) == (
        "special_equipment",
        2,
        True,
    )
    assert facts.addressed_to == ("CN",)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (update(request_subject=""), "request_update.request_subject"),
        (update(incident_subject=""), "request_update.incident_subject"),
        (update(to_node="Hubei"), "request_update.to_node"),
        (update(action=pb.REQUEST_ACTION_UNSPECIFIED), "request_update.action"),
        (pb.Record(notice_ack=pb.NoticeAck()), "notice_ack.notice_subject"),
        (
            pb.Record(
                escalation=pb.Escalation(incident_subject="CN-HB/X", to_node="CN")
            ),
            "escalation.reason",
        ),
        (
            pb.Record(
                escalation=pb.Escalation(
                    incident_subject="CN-HB/X", to_node="CN", reason="急"
                )
            ),
            "escalation.incident",
        ),
    ],
)
def test_a_malformed_workflow_record_names_its_field(record, field):
    with pytest.raises(InvalidRecord) as refused:
        validate(record)
    assert refused.value.field == field


def request_json(**deadline: object) -> dict:
    return {
        "ref": "R1",
        "kind": "joint_request",
        "incident_ref": "HB-1",
        "to": "CN-HN",
        "ask": "请协助核查",
        **deadline,
    }


def test_a_sample_request_leaves_the_deadline_to_its_node():
    _, record = record_from_json(request_json(), "CN-HB")
    assert not record.joint_request.HasField("due_at")
    _, record = record_from_json(request_json(due_within_hours=3), "CN-HB")
    assert record.joint_request.due_within_hours == 3
    assert not record.joint_request.HasField("due_at")
    _, record = record_from_json(
        request_json(due_at="2025-07-01T18:00:00+08:00"), "CN-HB"
    )
    assert record.joint_request.due_at.seconds == 1751364000


@pytest.mark.parametrize(
    ("deadline", "field"),
    [
        ({"due_within_hours": 0}, "due_within_hours"),
        ({"due_within_hours": True}, "due_within_hours"),
        ({"due_at": "2025-07-01T18:00:00"}, "due_at"),
        ({"due_at": "2025-07-01T18:00:00+08:00", "due_within_hours": 2}, "due_at"),
    ],
)
def test_a_bad_deadline_in_the_sample_shape_names_its_key(deadline, field):
    with pytest.raises(InvalidRecord) as refused:
        record_from_json(request_json(**deadline), "CN-HB")
    assert refused.value.field == field
