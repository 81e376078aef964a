"""The Workflow servicer: requests, notices and escalations on the local API.

Thin by design: convert the proto, call ``node.workflow.service``, convert
back. Status codes are chosen here: NOT_FOUND for what this node does not
hold, PERMISSION_DENIED for the other party's move, FAILED_PRECONDITION for
a move the request's state does not allow, ABORTED when another move won the
compare-and-set, INVALID_ARGUMENT for a missing reason or a bad field.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NoReturn, TypeVar

import grpc
from guantong.v1 import workflow_pb2 as wf
from guantong.v1 import workflow_pb2_grpc as wf_grpc

from node.clock import Clock
from node.errors import GuantongError, InvalidRecord
from node.local_api import _destination as destination
from node.records import timestamp
from node.storage.workflows import EscalationRow, NoticeRow, RequestRow
from node.workflow.requests import (
    Action,
    IllegalTransition,
    Problem,
    Role,
    TransitionConflict,
    allowed_actions,
    owes_first_report,
    withdrawn_label,
)
from node.workflow.service import Ambiguous, NotAllowedNow, NotHeld, Workflows
from node.workflow.wire import (
    action_from_pb,
    action_to_pb,
    disposition_to_pb,
    handling_to_pb,
)

T = TypeVar("T")

_PROBLEM_CODES = {
    Problem.WRONG_PARTY: grpc.StatusCode.PERMISSION_DENIED,
    Problem.WRONG_STATE: grpc.StatusCode.FAILED_PRECONDITION,
    Problem.TEXT_REQUIRED: grpc.StatusCode.INVALID_ARGUMENT,
}


class WorkflowService(wf_grpc.WorkflowServicer):
    def __init__(self, workflows: Workflows, clock: Clock):
        self.workflows = workflows
        self.clock = clock

    # --- requests --------------------------------------------------------------------

    def ListRequests(
        self, request: wf.ListRequestsRequest, context: grpc.ServicerContext
    ) -> wf.ListRequestsResponse:
        now = self.clock.now()
        rows = self.workflows.requests(request.include_closed)
        return wf.ListRequestsResponse(
            requests=[self._request_view(row, now) for row in rows], now=timestamp(now)
        )

    def Transition(
        self, request: wf.TransitionRequest, context: grpc.ServicerContext
    ) -> wf.TransitionResponse:
        try:
            action = action_from_pb(request.action)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "action: is required")
        moved = _call(
            context,
            lambda: self.workflows.move(
                request.request, action, request.text, request.author_unit
            ),
        )
        response = wf.TransitionResponse(
            request=self._request_view(moved.request, self.clock.now()),
            message_id=moved.published.message_id,
            destinations=[destination(d) for d in moved.published.decisions],
        )
        if moved.escalation is not None:
            response.escalation_subject = moved.escalation.subject_id
            response.escalation_destinations.extend(
                destination(d) for d in moved.escalation.decisions
            )
        return response

    def _request_view(self, row: RequestRow, now: datetime) -> wf.RequestView:
        role = self.workflows.role_of(row)
        withdrawn = row.incident_retracted
        owed = not withdrawn and owes_first_report(
            row.state, row.first_report_at is not None
        )
        actions = [] if withdrawn else allowed_actions(row.state, role)
        label = (
            withdrawn_label(row.state, row.incident_retraction_reason)
            if withdrawn
            else row.state.label
        )
        view = wf.RequestView(
            subject_id=row.subject_id,
            ref=row.ref,
            requester=row.requester,
            handler=row.handler,
            direction=wf.DIRECTION_SENT
            if role is Role.REQUESTER
            else wf.DIRECTION_RECEIVED,
            incident_subject=row.incident_subject,
            incident_title=row.incident_title or "",
            # protoc's stub takes only RiskLevel members; the field takes any int.
            level=row.level or 0,  # type: ignore[arg-type]
            ask=row.ask,
            exercise=row.exercise,
            state=wf.RequestState.Value(f"REQUEST_{row.state.status.value}"),
            handling=handling_to_pb(row.state.handling),
            disposition=disposition_to_pb(row.state.disposition),
            state_label=label,
            created_at=timestamp(row.created_at),
            updated_at=timestamp(row.updated_at),
            due_at=timestamp(row.due_at),
            awaiting_first_report=owed,
            seconds_left=int((row.due_at - now).total_seconds()),
            overdue=owed and now > row.due_at,
            last_by=row.last_by or "",
            last_text=row.last_text or "",
            result=row.result or "",
            decline_reason=row.decline_reason or "",
            escalation_reason=row.escalation_reason or "",
            escalation_subject=row.escalation_subject or "",
            allowed_actions=[action_to_pb(a) for a in actions],
        )
        if row.last_action and row.last_action != "retracted":
            view.last_action = action_to_pb(Action(row.last_action))
        for name in ("overdue_flagged_at", "first_report_at"):
            value = getattr(row, name)
            if value is not None:
                getattr(view, name).CopyFrom(timestamp(value))
        return view

    # --- notices ---------------------------------------------------------------------

    def SendNotice(
        self, request: wf.SendNoticeRequest, context: grpc.ServicerContext
    ) -> wf.SendNoticeResponse:
        notice, published = _call(
            context,
            lambda: self.workflows.send_notice(
                request.title,
                request.body,
                list(request.to_nodes),
                request.ref,
                request.author_unit,
            ),
        )
        return wf.SendNoticeResponse(
            notice=self._notice_view(notice),
            destinations=[destination(d) for d in published.decisions],
        )

    def AcknowledgeNotice(
        self, request: wf.AcknowledgeNoticeRequest, context: grpc.ServicerContext
    ) -> wf.AcknowledgeNoticeResponse:
        notice, published = _call(
            context,
            lambda: self.workflows.acknowledge_notice(
                request.notice, request.text, request.author_unit
            ),
        )
        return wf.AcknowledgeNoticeResponse(
            notice=self._notice_view(notice),
            destinations=[destination(d) for d in published.decisions],
        )

    def ListNotices(
        self, request: wf.ListNoticesRequest, context: grpc.ServicerContext
    ) -> wf.ListNoticesResponse:
        return wf.ListNoticesResponse(
            notices=[self._notice_view(n) for n in self.workflows.notices()]
        )

    def _notice_view(self, notice: NoticeRow) -> wf.NoticeView:
        sent = notice.origin == self.workflows.node_id
        view = wf.NoticeView(
            subject_id=notice.subject_id,
            ref=notice.ref,
            origin=notice.origin,
            title=notice.title,
            body=notice.body,
            sent_at=timestamp(notice.sent_at),
            direction=wf.DIRECTION_SENT if sent else wf.DIRECTION_RECEIVED,
            acknowledged=notice.acknowledged_at is not None,
        )
        if notice.acknowledged_at is not None:
            view.acknowledged_at.CopyFrom(timestamp(notice.acknowledged_at))
        for target in notice.targets:
            shown = view.targets.add(
                node=target.node,
                acknowledged=target.acknowledged_at is not None,
                text=target.text or "",
            )
            if target.acknowledged_at is not None:
                shown.acknowledged_at.CopyFrom(timestamp(target.acknowledged_at))
        return view

    # --- escalations -----------------------------------------------------------------

    def EscalateIncident(
        self, request: wf.EscalateIncidentRequest, context: grpc.ServicerContext
    ) -> wf.EscalateIncidentResponse:
        row, published = _call(
            context,
            lambda: self.workflows.escalate_incident(
                request.incident, request.reason, request.to_node, request.author_unit
            ),
        )
        return wf.EscalateIncidentResponse(
            escalation=self._escalation_view(row),
            destinations=[destination(d) for d in published.decisions],
        )

    def ListEscalations(
        self, request: wf.ListEscalationsRequest, context: grpc.ServicerContext
    ) -> wf.ListEscalationsResponse:
        return wf.ListEscalationsResponse(
            escalations=[self._escalation_view(e) for e in self.workflows.escalations()]
        )

    def _escalation_view(self, row: EscalationRow) -> wf.EscalationView:
        snapshot, held = self.workflows.escalation_incident(row)
        return wf.EscalationView(
            subject_id=row.subject_id,
            ref=row.ref,
            origin=row.origin,
            to_node=row.to_node,
            direction=(
                wf.DIRECTION_SENT
                if row.origin == self.workflows.node_id
                else wf.DIRECTION_RECEIVED
            ),
            incident_subject=row.incident_subject,
            request_subject=row.request_subject or "",
            reason=row.reason,
            escalated_at=timestamp(row.escalated_at),
            incident=snapshot,
            incident_held=held,
        )


def _call(context: grpc.ServicerContext, operation: Callable[[], T]) -> T:
    """Run a workflow operation; turn its refusals into status codes."""
    try:
        return operation()
    except TransitionConflict as exc:
        _abort(context, grpc.StatusCode.ABORTED, exc)
    except IllegalTransition as exc:
        _abort(context, _PROBLEM_CODES[exc.problem], exc)
    except NotHeld as exc:
        _abort(context, grpc.StatusCode.NOT_FOUND, exc)
    except NotAllowedNow as exc:
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, exc)
    except (Ambiguous, InvalidRecord) as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc)
    except GuantongError as exc:
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, exc)


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, exc: Exception
) -> NoReturn:
    context.abort(code, str(exc))
    raise AssertionError("unreachable: abort raises")
