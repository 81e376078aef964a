"""Requests withdrawn with their incident, between real nodes: once the
incident is retracted, neither party may move them, the deadline checker
neither flags nor escalates them, and both nodes list them as withdrawn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from guantong.v1 import local_pb2 as api
from guantong.v1 import workflow_pb2 as wf

from node.clock import FakeClock
from node.storage import admin as admin_queries
from node.storage.schema import DEAD_LETTER
from node.workflow.deadlines import CheckReport
from tests.conftest import eventually
from tests.helpers import incident, local, publish
from tests.workflow_helpers import (
    ACCEPT,
    CLOSE,
    ESCALATE,
    move,
    request_record,
    request_view,
    state_of,
    workflow,
)

START = datetime(2025, 7, 1, 8, tzinfo=UTC)
FAST = {"workflow": {"checker_interval_ms": 20}}
REQUEST = "CN-HB/HB-T-003-R1"
INCIDENT = "CN-HB/HB-T-003"


def retracted(node, subject: str) -> bool:  # type: ignore[no-untyped-def]
    held = node.store.latest(subject)
    return held is not None and held.kind == "retraction"


def test_a_retracted_incidents_request_is_withdrawn_on_both_nodes(federation):
    clock = FakeClock(START)
    cn = federation.start("CN", ("CN-HB", "CN-HN"), clock=clock, **FAST)
    hn = federation.start("CN-HN", ("CN-HB", "CN"), clock=clock, **FAST)
    hb = federation.start("CN-HB", ("CN-HN", "CN"), clock=clock, **FAST)
    # A level Ⅱ incident: the handler holds it, so its retraction reaches it.
    publish(hb, incident("HB-T-003", level=2))
    publish(hb, request_record("HB-T-003", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")
    assert hn.store.latest(INCIDENT) is not None

    local(hb).Retract(
        api.RetractRequest(ref="HB-T-003", reason="经核实为不实信息"), timeout=10
    )
    eventually(lambda: retracted(hn, INCIDENT))

    # Any move on it is refused, on either node, naming the incident.
    for node, action, text in ((hn, ACCEPT, ""), (hb, ESCALATE, "急"), (hb, CLOSE, "")):
        with pytest.raises(grpc.RpcError) as refused:
            move(node, REQUEST, action, text)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details()
        assert "事件已撤回 incident retracted" in details
        assert INCIDENT in details and REQUEST in details
        assert "\n" not in details

    # Past the deadline (Ⅱ: 1 h): no flag, no escalation, nothing reaches CN.
    clock.advance(timedelta(hours=2))
    for node in (hb, hn):
        assert node.deadlines.step() == CheckReport()
    assert hb.workflows.escalations() == []
    assert cn.workflows.escalations() == []

    for node in (hb, hn):
        [listed] = [
            view
            for view in workflow(node)
            .ListRequests(wf.ListRequestsRequest(), timeout=10)
            .requests
            if view.subject_id == REQUEST
        ]
        assert listed.state_label.startswith("事件已撤回 incident retracted")
        assert "经核实为不实信息" in listed.state_label
        assert list(listed.allowed_actions) == []
        assert not listed.overdue and not listed.awaiting_first_report
        assert not listed.overdue_flagged_at.seconds
        assert state_of(node, REQUEST) == "OPEN"
    assert not request_view(hb, REQUEST).escalation_subject


def test_a_move_from_a_handler_without_the_incident_is_refused_by_the_requester(
    federation,
):
    hn = federation.start("CN-HN", ("CN-HB",))
    hb = federation.start("CN-HB", ("CN-HN",))
    # An ordinary (Ⅳ) incident: the handler never holds it, so it never
    # learns of the retraction; the requester refuses its move instead.
    publish(hb, incident("HB-T-003", level=4))
    publish(hb, request_record("HB-T-003", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")
    assert hn.store.latest(INCIDENT) is None

    local(hb).Retract(
        api.RetractRequest(ref="HB-T-003", reason="经核实为不实信息"), timeout=10
    )
    move(hn, REQUEST, ACCEPT)

    [dead] = eventually(lambda: admin_queries.recent_sent(hn.store, DEAD_LETTER))
    assert "事件已撤回 incident retracted" in dead.outcome
    assert INCIDENT in dead.outcome
    assert state_of(hb, REQUEST) == "OPEN"
    assert request_view(hb, REQUEST).state_label.startswith(
        "事件已撤回 incident retracted"
    )
