"""Helpers the workflow tests share: the Workflow service of a running node."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
from guantong.v1 import records_pb2 as pb
from guantong.v1 import workflow_pb2 as wf
from guantong.v1 import workflow_pb2_grpc as wf_grpc

from node.app import Node
from node.envelopes import seal
from node.records import subject_id


class _ClosingStub:
    """A Workflow stub whose every call opens and closes its own channel, so
    tests leave no channels (and their threads) behind in this process."""

    def __init__(self, address: str):
        self.address = address

    def __getattr__(self, method: str):  # type: ignore[no-untyped-def]
        def call(request, **kwargs):  # type: ignore[no-untyped-def]
            with grpc.insecure_channel(self.address) as channel:
                return getattr(wf_grpc.WorkflowStub(channel), method)(request, **kwargs)

        return call


def workflow(node: Node) -> wf_grpc.WorkflowStub:
    return _ClosingStub(node.local_address)  # type: ignore[return-value]


def move(
    node: Node, request: str, action: int, text: str = ""
) -> wf.TransitionResponse:
    return workflow(node).Transition(
        wf.TransitionRequest(request=request, action=action, text=text), timeout=10
    )


def request_view(node: Node, subject: str) -> wf.RequestView | None:
    """The request as ``node`` holds it, closed or not; None if not held."""
    listed = workflow(node).ListRequests(
        wf.ListRequestsRequest(include_closed=True), timeout=10
    )
    return next((r for r in listed.requests if r.subject_id == subject), None)


def state_of(node: Node, subject: str) -> str | None:
    """``ACCEPTED``, ``CLOSED``, ...: the shown state, or None if not held."""
    view = request_view(node, subject)
    return wf.RequestState.Name(view.state).removeprefix("REQUEST_") if view else None


def request_record(incident_ref: str, to: str, **deadline: float | str) -> dict:
    return {
        "ref": f"{incident_ref}-R1",
        "kind": "joint_request",
        "incident_ref": incident_ref,
        "to": to,
        "ask": "请协助核查涉事企业在本省的门店并反馈。",
        **deadline,
    }


def sealed_from(
    origin: str, ref: str, record: pb.Record, agreement: str
) -> pb.Envelope:
    """An envelope as ``origin`` would send it, built by hand: for records a
    well-behaved node would refuse to publish."""
    envelope = seal(
        message_id=uuid.uuid4().hex,
        origin=origin,
        author_unit="",
        created_at=datetime.now(UTC),
        subject_id=subject_id(origin, ref),
        subject_version=1,
        ref=ref,
        record=record,
        exercise=False,
    )
    envelope.agreement_id = agreement
    envelope.agreement_version = 1
    return envelope


ACK, ACCEPT, DECLINE = pb.ACTION_ACKNOWLEDGE, pb.ACTION_ACCEPT, pb.ACTION_DECLINE
PROGRESS, RESULT = pb.ACTION_REPORT_PROGRESS, pb.ACTION_REPORT_RESULT
ESCALATE, CLOSE = pb.ACTION_ESCALATE, pb.ACTION_CLOSE
