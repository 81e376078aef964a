"""Overdue requests between real nodes, with one fake clock moved past the
deadline instead of waiting: flagged on both nodes, escalated to CN where the
agreement says so, only flagged where it does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from guantong.v1 import workflow_pb2 as wf

from node.clock import FakeClock
from node.workflow.deadlines import CheckReport
from tests.conftest import eventually
from tests.helpers import inbox_refs, incident, publish
from tests.workflow_helpers import (
    ACCEPT,
    RESULT,
    move,
    request_record,
    request_view,
    state_of,
    workflow,
)

START = datetime(2025, 7, 1, 8, tzinfo=UTC)
FAST = {"workflow": {"checker_interval_ms": 20}}


def escalations(node) -> list[wf.EscalationView]:  # type: ignore[no-untyped-def]
    response = workflow(node).ListEscalations(wf.ListEscalationsRequest(), timeout=10)
    return list(response.escalations)


def test_an_overdue_request_is_flagged_on_both_nodes_and_escalated_to_cn(federation):
    clock = FakeClock(START)
    cn = federation.start("CN", ("CN-HB", "CN-HN"), clock=clock, **FAST)
    hn = federation.start("CN-HN", ("CN-HB", "CN"), clock=clock, **FAST)
    hb = federation.start("CN-HB", ("CN-HN", "CN"), clock=clock, **FAST)
    request = "CN-HB/HB-4-R1"
    # An ordinary (Ⅳ) incident: below every reporting level, so neither CN
    # nor CN-HN holds it; the request about it still goes to CN-HN.
    publish(hb, incident("HB-4", level=4))
    publish(hb, request_record("HB-4", "CN-HN"))
    eventually(lambda: state_of(hn, request) == "OPEN")
    assert request_view(hb, request).seconds_left == 3 * 3600
    assert not request_view(hb, request).overdue

    clock.advance(timedelta(hours=3, minutes=1))

    eventually(lambda: state_of(hn, request) == "ESCALATED")
    [escalation] = eventually(lambda: escalations(cn))
    assert (
        escalation.origin == "CN-HB" and escalation.direction == wf.DIRECTION_RECEIVED
    )
    assert escalation.request_subject == request
    assert escalation.incident_subject == "CN-HB/HB-4"
    assert escalation.reason.startswith("逾期未报 overdue")
    # CN never received the incident; it sees it through the escalation.
    assert not escalation.incident_held
    assert escalation.incident.title == "事件 HB-4" and escalation.incident.level == 4
    assert "HB-4" not in inbox_refs(cn)

    for node in (hb, hn):
        view = eventually(
            lambda n=node: request_view(n, request).overdue_flagged_at.seconds
        )
        assert view
        shown = request_view(node, request)
        assert shown.overdue and shown.seconds_left == -60
        assert shown.escalation_reason == escalation.reason
    assert request_view(hb, request).escalation_subject == escalation.subject_id

    # Once: later steps on either node neither flag nor escalate again.
    assert hb.deadlines.step() == CheckReport()
    assert hn.deadlines.step() == CheckReport()
    assert len(escalations(cn)) == 1

    # The handler, which does not hold the incident, still answers.
    move(hn, request, ACCEPT)
    move(hn, request, RESULT, "已核查")
    eventually(lambda: request_view(hb, request).result == "已核查")
    assert state_of(hb, request) == "ESCALATED"
    assert request_view(hb, request).state_label == (
        "已提级 escalated (handling 已反馈结果 result reported)"
    )


def test_without_escalate_overdue_to_an_overdue_request_is_only_flagged(federation):
    clock = FakeClock(START)
    federation.start("CN", ("CN-SH", "CN-JS"), clock=clock, **FAST)
    js = federation.start("CN-JS", ("CN-SH", "CN"), clock=clock, **FAST)
    sh = federation.start("CN-SH", ("CN-JS", "CN"), clock=clock, **FAST)
    request = "CN-SH/SH-2-R1"
    publish(sh, incident("SH-2", level=2))
    publish(sh, request_record("SH-2", "CN-JS"))
    eventually(lambda: state_of(js, request) == "OPEN")

    clock.advance(timedelta(hours=1, seconds=1))

    for node in (sh, js):
        eventually(lambda n=node: request_view(n, request).overdue_flagged_at.seconds)
    assert sh.deadlines.step().escalated == []
    assert state_of(sh, request) == state_of(js, request) == "OPEN"
    assert sh.workflows.escalations() == []
