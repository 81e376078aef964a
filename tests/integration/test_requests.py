"""Joint-handling requests between real nodes: the lifecycle, the refusals of
the local API, and a receiver refusing a move its copy does not allow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import local_pb2 as api
from guantong.v1 import records_pb2 as pb
from guantong.v1 import workflow_pb2 as wf

from gateway.identity import TlsFiles
from node.clock import FakeClock
from tests.conftest import eventually
from tests.helpers import incident, local, publish
from tests.integration.test_peer_checks import federation_stub, push
from tests.workflow_helpers import (
    ACCEPT,
    ACK,
    CLOSE,
    DECLINE,
    ESCALATE,
    PROGRESS,
    RESULT,
    move,
    request_record,
    request_view,
    sealed_from,
    state_of,
    workflow,
)

REQUEST = "CN-HB/HB-1-R1"


@pytest.fixture
def pair(federation):
    """CN-HB has asked CN-HN for help about its level Ⅱ incident HB-1."""
    hn = federation.start("CN-HN", ("CN-HB",))
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1", level=2))
    publish(hb, request_record("HB-1", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")
    return hb, hn


def both(hb, hn, state: str) -> bool:
    return state_of(hb, REQUEST) == state and state_of(hn, REQUEST) == state


def test_a_request_goes_through_its_lifecycle_on_both_nodes(pair):
    hb, hn = pair

    move(hn, REQUEST, ACK, "已收到")
    eventually(lambda: both(hb, hn, "ACKNOWLEDGED"))
    move(hn, "HB-1-R1", ACCEPT)
    eventually(lambda: both(hb, hn, "ACCEPTED"))
    move(hn, REQUEST, PROGRESS, "已派员到场核查")
    eventually(lambda: request_view(hb, REQUEST).first_report_at.seconds > 0)
    assert state_of(hb, REQUEST) == "ACCEPTED"
    move(hn, REQUEST, RESULT, "核查完毕：维保资质齐全")
    eventually(lambda: both(hb, hn, "RESULT_REPORTED"))
    closed = move(hb, "HB-1-R1", CLOSE, "感谢协助")
    eventually(lambda: both(hb, hn, "CLOSED"))

    assert (
        closed.request.state_label
        == "已办结 closed (handling 已反馈结果 result reported)"
    )
    for node in (hb, hn):
        view = request_view(node, REQUEST)
        assert view.result == "核查完毕：维保资质齐全"
        assert view.last_by == "CN-HB" and view.last_text == "感谢协助"
        assert not view.awaiting_first_report and not view.overdue
    assert request_view(hb, REQUEST).direction == wf.DIRECTION_SENT
    assert request_view(hn, REQUEST).direction == wf.DIRECTION_RECEIVED
    listed = workflow(hn).ListRequests(wf.ListRequestsRequest(), timeout=10)
    assert [r.subject_id for r in listed.requests] == []


def test_each_node_lists_the_request_with_the_moves_it_may_make(pair):
    hb, hn = pair
    sent, received = request_view(hb, REQUEST), request_view(hn, REQUEST)
    assert sent.state_label == received.state_label == "待签收 open"
    assert list(sent.allowed_actions) == [ESCALATE]
    assert list(received.allowed_actions) == [ACK, ACCEPT, DECLINE]
    assert sent.ask == received.ask and sent.due_at == received.due_at


@pytest.mark.parametrize(
    ("mover", "action", "text", "code", "words"),
    [
        (
            "hb",
            ACCEPT,
            "",
            grpc.StatusCode.PERMISSION_DENIED,
            "only the 承办方 handler",
        ),
        (
            "hn",
            CLOSE,
            "",
            grpc.StatusCode.PERMISSION_DENIED,
            "only the 请求方 requester",
        ),
        (
            "hn",
            ESCALATE,
            "急",
            grpc.StatusCode.PERMISSION_DENIED,
            "only the 请求方 requester",
        ),
        ("hn", RESULT, "结果", grpc.StatusCode.FAILED_PRECONDITION, "state OPEN"),
        ("hb", CLOSE, "", grpc.StatusCode.FAILED_PRECONDITION, "state OPEN"),
        ("hn", DECLINE, " ", grpc.StatusCode.INVALID_ARGUMENT, "needs a reason"),
        # CN-HB has no address for CN: an escalation it could not send is not made.
        ("hb", ESCALATE, "提级", grpc.StatusCode.FAILED_PRECONDITION, "not reach CN"),
    ],
)
def test_the_local_api_refuses_a_move_naming_role_state_and_action(
    pair, mover, action, text, code, words
):
    hb, hn = pair
    node = {"hb": hb, "hn": hn}[mover]
    with pytest.raises(grpc.RpcError) as refused:
        move(node, REQUEST, action, text)
    assert refused.value.code() == code
    assert words in refused.value.details()
    assert "CN-HB/HB-1-R1" in refused.value.details()
    assert state_of(hb, REQUEST) == state_of(hn, REQUEST) == "OPEN"


def test_an_unknown_request_is_not_found(pair):
    _, hn = pair
    with pytest.raises(grpc.RpcError) as refused:
        move(hn, "CN-HB/NOPE", ACK)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("action", "seen", "code", "words"),
    [
        # A move the rules do not allow, published around the Workflow API.
        (
            pb.ACTION_CLOSE,
            pb.HANDLING_OPEN,
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_update.action: the 承办方 handler may not 办结 close",
        ),
        # A move from a state the request is no longer in.
        (
            pb.ACTION_ACCEPT,
            pb.HANDLING_ACKNOWLEDGED,
            grpc.StatusCode.FAILED_PRECONDITION,
            "another move came first",
        ),
    ],
)
def test_a_request_update_published_directly_is_checked_the_same_way(
    pair, action, seen, code, words
):
    _, hn = pair
    update = pb.RequestUpdate(
        request_subject=REQUEST,
        incident_subject="CN-HB/HB-1",
        to_node="CN-HB",
        action=action,
        from_handling=seen,
        from_disposition=pb.DISPOSITION_ACTIVE,
    )
    with pytest.raises(grpc.RpcError) as refused:
        local(hn).Publish(
            api.PublishRequest(ref="U1", record=pb.Record(request_update=update)),
            timeout=10,
        )
    assert refused.value.code() == code
    assert words in refused.value.details()
    assert state_of(hn, REQUEST) == "OPEN"
    assert hn.store.latest("CN-HN/U1") is None


def test_a_move_the_receivers_copy_does_not_allow_is_refused_and_recorded(pair, certs):
    hb, hn = pair
    as_hn = federation_stub(hb, TlsFiles.for_node(certs, "CN-HN"))

    # The handler claims to close the request, which only the requester may,
    # and reports a result on a request it never accepted.
    closing = _update_from_hn(pb.ACTION_CLOSE, "")
    reporting = _update_from_hn(pb.ACTION_REPORT_RESULT, "结果")
    response = push(as_hn, closing, reporting)

    assert [r.outcome for r in response.results] == [fed.REJECTED_INVALID] * 2
    wrong_party, wrong_state = (r.reason for r in response.results)
    assert "承办方 handler may not 办结 close" in wrong_party
    assert "only the 请求方 requester" in wrong_party
    assert "结果反馈 report the result" in wrong_state and "state OPEN" in wrong_state
    refusals = [r for r in hb.store.refusals() if r.kind == "request_update"]
    assert {r.outcome for r in refusals} == {"refused_by_state"}
    assert len(refusals) == 2
    assert state_of(hb, REQUEST) == "OPEN"
    assert hb.store.latest(closing.subject_id) is None


def test_a_handlers_move_crossing_the_requesters_close_is_refused_by_the_requester(
    federation,
):
    hn = federation.start("CN-HN", ("CN-HB",))
    hb = federation.start("CN-HB", ("CN-HN", "CN"))
    publish(hb, incident("HB-1", level=2))
    publish(hb, request_record("HB-1", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")
    move(hb, REQUEST, ESCALATE, "本地处置不力，提级")
    eventually(lambda: state_of(hn, REQUEST) == "ESCALATED")

    # HN cannot reach HB for a while, so its acceptance crosses HB's close.
    hn.set_peer_address("CN-HB", "127.0.0.1:1")
    move(hn, REQUEST, ACCEPT)
    move(hb, REQUEST, CLOSE, "国家局已接手")
    eventually(lambda: state_of(hn, REQUEST) == "CLOSED")
    hn.set_peer_address("CN-HB", hb.federation_address)

    eventually(lambda: state_of(hn, REQUEST) == "CLOSED")
    eventually(lambda: any(r.kind == "request_update" for r in hb.store.refusals()))
    assert state_of(hb, REQUEST) == "CLOSED"
    refused = next(r for r in hb.store.refusals() if r.kind == "request_update")
    assert "state CLOSED" in refused.reason


def test_deadline_comes_from_the_incidents_level_by_the_nodes_clock(federation):
    clock = FakeClock(datetime(2025, 7, 1, 8, tzinfo=UTC))
    hn = federation.start("CN-HN", ("CN-HB",), clock=clock)
    hb = federation.start(
        "CN-HB",
        ("CN-HN",),
        clock=clock,
        workflow={"first_report_hours": {1: 0.5, 2: 1, 3: 2, 4: 3}},
    )
    publish(hb, incident("HB-3", level=3))
    publish(hb, incident("HB-1", level=1))
    publish(hb, request_record("HB-3", "CN-HN"))
    publish(hb, request_record("HB-1", "CN-HN"))
    publish(
        hb, {**request_record("HB-3", "CN-HN"), "ref": "HB-3-R2", "due_within_hours": 5}
    )

    due = {
        ref: request_view(hb, f"CN-HB/{ref}").due_at.ToDatetime(tzinfo=UTC)
        for ref in ("HB-3-R1", "HB-1-R1", "HB-3-R2")
    }
    assert due == {
        "HB-3-R1": clock.now() + timedelta(hours=2),
        "HB-1-R1": clock.now() + timedelta(minutes=30),
        "HB-3-R2": clock.now() + timedelta(hours=5),
    }
    received = eventually(lambda: request_view(hn, "CN-HB/HB-3-R1"))
    assert received.seconds_left == 2 * 3600
    assert received.level == pb.LEVEL_3 and received.incident_title == "事件 HB-3"


def _update_from_hn(action: int, text: str) -> pb.Envelope:
    record = pb.Record(
        request_update=pb.RequestUpdate(
            request_subject=REQUEST,
            incident_subject="CN-HB/HB-1",
            to_node="CN-HB",
            action=action,
            text=text,
            from_handling=pb.HANDLING_OPEN,
            from_disposition=pb.DISPOSITION_ACTIVE,
        )
    )
    ref = f"HB-1-R1.x.{uuid.uuid4().hex[:6]}"
    return sealed_from("CN-HN", ref, record, "central-china")


def test_requests_and_escalations_work_with_both_nodes_on_postgresql(
    federation, postgres_databases
):
    cn = federation.start("CN", ("CN-HB",), database_url=postgres_databases())
    hn = federation.start("CN-HN", ("CN-HB",), database_url=postgres_databases())
    hb = federation.start("CN-HB", ("CN-HN", "CN"), database_url=postgres_databases())
    publish(hb, incident("HB-1", level=2))
    publish(hb, request_record("HB-1", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")

    move(hn, REQUEST, DECLINE, "不属本省管辖")
    eventually(lambda: both(hb, hn, "DECLINED"))
    escalated = move(hb, REQUEST, ESCALATE, "承办方拒绝，提级")
    eventually(lambda: both(hb, hn, "ESCALATED"))

    listed = eventually(
        lambda: (
            workflow(cn)
            .ListEscalations(wf.ListEscalationsRequest(), timeout=10)
            .escalations
        )
    )
    assert [e.subject_id for e in listed] == [escalated.escalation_subject]
    assert listed[0].request_subject == REQUEST and listed[0].incident_held
    assert request_view(hn, REQUEST).decline_reason == "不属本省管辖"


def test_reflection_lists_the_workflow_service_on_the_local_server(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    stub = reflection_pb2_grpc.ServerReflectionStub(
        grpc.insecure_channel(hb.local_address)
    )
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"guantong.v1.Local", "guantong.v1.Workflow"} <= names
