"""How workflow records change this node's workflow tables.

Registered per kind on the node's :class:`~node.appliers.Appliers`; each
function runs in the transaction of the log row that carries its record,
for records published here and received alike (see ``node.appliers``).

- ``joint_request``: stores the request (both parties), or updates its ask
  and deadline for a newer version.
- ``request_update``: moves the request. A move made here is applied by
  compare-and-set from the state its mover saw (the update's ``from_*``
  fields), so two concurrent moves cannot both win: the loser's publish
  fails as a whole with TransitionConflict. A move received is first checked
  against this node's copy of the request and refused, not stored, when the
  rules do not allow it: wrong party, wrong state, not addressed here.
- ``retraction`` of a request closes it. A retraction of an incident changes
  no workflow row: its requests read as withdrawn from the subjects view
  (``incident_retracted``), and a move on one is refused here too, made here
  or received.
- ``notice``: stores it; on the origin, with every node it is for.
- ``notice_ack``: marks the acknowledgement, on the acknowledging node and
  on the notice's origin, which refuses one from a node the notice is not
  for or one that already acknowledged.
- ``escalation``: stores it; on the sender, also on the request escalated.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from guantong.v1 import records_pb2 as pb
from sqlalchemy import Connection

from gateway.policy import PolicyHolder
from node.appliers import Applied, Appliers
from node.clock import Clock
from node.envelopes import Opened, read_stored
from node.errors import GuantongError, InvalidRecord
from node.records import CATEGORY_CODES, RecordFacts, facts_of
from node.storage import workflows as data
from node.storage.workflows import (
    EscalationRow,
    Move,
    NewRequest,
    NoticeRow,
    RequestRow,
)
from node.workflow.requests import (
    Action,
    IllegalTransition,
    RequestWithdrawn,
    Role,
    TransitionConflict,
    transition,
)
from node.workflow.wire import action_from_pb, state_from_update, time_of


class EscalationAlreadySent(GuantongError):
    """The request's escalation record went out already."""

    def __init__(self, request_subject: str):
        self.request_subject = request_subject
        super().__init__(f"request {request_subject} has its escalation record already")


# The nodes a notice published here reaches, from the agreements in force.
Audience = Callable[[RecordFacts], Collection[str]]

_REPORTS = (Action.REPORT_PROGRESS, Action.REPORT_RESULT)


def register(appliers: Appliers, node_id: str, audience: Audience) -> None:
    workflow = _WorkflowAppliers(node_id, audience)
    appliers.register("joint_request", workflow.request)
    appliers.register_check("joint_request", workflow.check_request)
    appliers.register("request_update", workflow.update)
    appliers.register_check("request_update", workflow.check_update)
    appliers.register("retraction", workflow.retraction)
    appliers.register("notice", workflow.notice)
    appliers.register("notice_ack", workflow.notice_ack)
    appliers.register_check("notice_ack", workflow.check_notice_ack)
    appliers.register("escalation", workflow.escalation)


def audience_of(policies: PolicyHolder, node_id: str, clock: Clock) -> Audience:
    """The nodes the agreements in force let a notice from ``node_id`` reach."""

    def audience(facts: RecordFacts) -> list[str]:
        decisions = policies.current.decide_all(facts, node_id, clock.now())
        return [decision.receiver for decision in decisions if decision.allowed]

    return audience


def role_in(row: RequestRow, node: str) -> Role | None:
    """``node``'s part in the request, or None if it is no party to it."""
    if node == row.requester:
        return Role.REQUESTER
    if node == row.handler:
        return Role.HANDLER
    return None


class _WorkflowAppliers:
    def __init__(self, node_id: str, audience: Audience):
        self.node_id = node_id
        self.audience = audience

    # --- requests --------------------------------------------------------------------

    def check_request(
        self, connection: Connection, opened: Opened, sender: str
    ) -> str | None:
        request = opened.record.joint_request
        if request.to_node != self.node_id:
            return (
                f"the request is addressed to {request.to_node}, not to {self.node_id}"
            )
        if not request.HasField("due_at"):
            return "joint_request.due_at: a request needs its deadline"
        return None

    def request(self, connection: Connection, applied: Applied) -> None:
        envelope, request = applied.opened.envelope, applied.opened.record.joint_request
        if not request.HasField("due_at"):
            raise InvalidRecord("joint_request.due_at", "a request needs its deadline")
        incident = _held_incident(connection, request.incident_subject)
        data.upsert_request_txn(
            connection,
            NewRequest(
                subject_id=envelope.subject_id,
                ref=envelope.ref,
                requester=envelope.origin_node,
                handler=request.to_node,
                incident_subject=request.incident_subject,
                incident_title=incident.title if incident else None,
                level=int(incident.level) if incident and incident.level else None,
                exercise=envelope.exercise,
                ask=request.ask,
                log_seq=applied.seq,
                created_at=time_of(envelope.created_at),
                due_at=time_of(request.due_at),
            ),
        )

    def check_update(
        self, connection: Connection, opened: Opened, sender: str
    ) -> str | None:
        update = opened.record.request_update
        row = data.request_txn(connection, update.request_subject)
        if row is None:
            return f"request {update.request_subject} is not held by {self.node_id}"
        role = role_in(row, sender)
        if role is None:
            return (
                f"{sender} is neither the requester ({row.requester}) nor the handler "
                f"({row.handler}) of request {row.subject_id}"
            )
        if update.to_node != self.node_id:
            return f"the update is addressed to {update.to_node}, not to {self.node_id}"
        try:
            action = action_from_pb(update.action)
        except ValueError:
            return "request_update.action: no action is set"
        if row.incident_retracted:
            return str(RequestWithdrawn(row.subject_id, row.incident_subject, action))
        try:
            transition(row.state, role, action, update.text, request=row.subject_id)
        except IllegalTransition as refused:
            return f"{refused} ({sender} moved it from {_seen(update)})"
        return None

    def update(self, connection: Connection, applied: Applied) -> None:
        envelope, update = applied.opened.envelope, applied.opened.record.request_update
        row = data.request_txn(connection, update.request_subject)
        mover = envelope.origin_node
        if row is None:
            raise InvalidRecord(
                "request_update.request_subject",
                f"no request {update.request_subject!r} is held by {self.node_id}",
            )
        role = role_in(row, mover)
        if role is None:
            raise InvalidRecord(
                "request_update.request_subject",
                f"{mover} is no party to request {row.subject_id}",
            )
        action = action_from_pb(update.action)
        if row.incident_retracted:
            # A move made here raced the incident's retraction; one received
            # was refused by check_update already.
            raise RequestWithdrawn(row.subject_id, row.incident_subject, action)

        if applied.received_from is None:
            # A move made here starts from the state its mover saw; the
            # compare-and-set below fails if the state is no longer that.
            other = row.handler if role is Role.REQUESTER else row.requester
            if update.to_node != other:
                raise InvalidRecord(
                    "request_update.to_node", f"must be the other party, {other}"
                )
            try:
                expected = state_from_update(update)
            except ValueError as exc:
                raise InvalidRecord(
                    "request_update.from_handling", "the state moved from is required"
                ) from exc
        else:
            # Checked against this copy already (check_update), in this
            # transaction.
            expected = row.state
        try:
            after = transition(
                expected, role, action, update.text, request=row.subject_id
            )
        except IllegalTransition as exc:
            # Only a record published around the Workflow API gets here (a
            # Local.Publish of a request_update); the API refuses earlier.
            raise InvalidRecord("request_update.action", str(exc)) from exc

        moved = data.move_request_txn(
            connection,
            row.subject_id,
            expected,
            after,
            _move(action, mover, update, envelope),
        )
        if not moved:
            current = data.request_txn(connection, row.subject_id)
            now = current.state if current else expected
            raise TransitionConflict(
                role, now, action, expected, request=row.subject_id
            )

    def retraction(self, connection: Connection, applied: Applied) -> None:
        retraction = applied.opened.record.retraction
        if data.request_txn(connection, retraction.subject_id) is None:
            return
        note = "已撤回 retracted" + (
            f": {retraction.reason}" if retraction.reason else ""
        )
        data.close_retracted_request_txn(
            connection,
            retraction.subject_id,
            time_of(applied.opened.envelope.created_at),
            note,
        )

    # --- notices ---------------------------------------------------------------------

    def notice(self, connection: Connection, applied: Applied) -> None:
        envelope, notice = applied.opened.envelope, applied.opened.record.notice
        targets: Collection[str] = ()
        if applied.received_from is None:
            # Gap (issue 3): who a notice is for is fixed by the agreements in
            # force when it is sent; a node later added to national-reporting
            # is not expected to acknowledge it, and a retracted notice still
            # lists its pending acknowledgements (retractions of notices are
            # not applied to this table).
            targets = self.audience(facts_of(applied.opened.record, self.node_id))
        data.upsert_notice_txn(
            connection,
            NoticeRow(
                subject_id=envelope.subject_id,
                ref=envelope.ref,
                origin=envelope.origin_node,
                title=notice.title,
                body=notice.body,
                log_seq=applied.seq,
                sent_at=time_of(envelope.created_at),
                received_from=applied.received_from,
                acknowledged_at=None,
                ack_text=None,
            ),
            targets,
        )

    def check_notice_ack(
        self, connection: Connection, opened: Opened, sender: str
    ) -> str | None:
        subject = opened.record.notice_ack.notice_subject
        notice = data.notice_txn(connection, subject)
        if notice is None or notice.origin != self.node_id:
            return f"notice {subject} was not sent by {self.node_id}"
        target = next((t for t in notice.targets if t.node == sender), None)
        if target is None:
            return f"notice {subject} is not for {sender}"
        if target.acknowledged_at is not None:
            return (
                f"{sender} acknowledged notice {subject} already, at "
                f"{target.acknowledged_at.isoformat()}"
            )
        return None

    def notice_ack(self, connection: Connection, applied: Applied) -> None:
        envelope, ack = applied.opened.envelope, applied.opened.record.notice_ack
        at = time_of(envelope.created_at)
        if applied.received_from is not None:
            data.acknowledge_target_txn(
                connection,
                ack.notice_subject,
                envelope.origin_node,
                at,
                ack.text,
                envelope.message_id,
            )
            return
        notice = data.notice_txn(connection, ack.notice_subject)
        if notice is None or notice.origin == self.node_id:
            raise InvalidRecord(
                "notice_ack.notice_subject",
                f"no notice {ack.notice_subject!r} received by {self.node_id}",
            )
        if not data.acknowledge_own_txn(connection, ack.notice_subject, at, ack.text):
            raise InvalidRecord(
                "notice_ack.notice_subject",
                f"{ack.notice_subject} is acknowledged already",
            )

    # --- escalations -----------------------------------------------------------------

    def escalation(self, connection: Connection, applied: Applied) -> None:
        envelope, escalation = applied.opened.envelope, applied.opened.record.escalation
        incident = escalation.incident
        data.upsert_escalation_txn(
            connection,
            EscalationRow(
                subject_id=envelope.subject_id,
                ref=envelope.ref,
                origin=envelope.origin_node,
                to_node=escalation.to_node,
                incident_subject=escalation.incident_subject,
                request_subject=escalation.request_subject or None,
                reason=escalation.reason,
                incident_title=incident.title,
                level=int(incident.level) or None,
                category=CATEGORY_CODES.get(incident.category),
                exercise=envelope.exercise,
                escalated_at=time_of(envelope.created_at),
                log_seq=applied.seq,
                received_from=applied.received_from,
            ),
        )
        if applied.received_from is None and escalation.request_subject:
            # One escalation record per escalated request, even with two
            # replicas sending it at once: the second publish fails.
            if not data.claim_escalation_txn(
                connection, escalation.request_subject, envelope.subject_id
            ):
                raise EscalationAlreadySent(escalation.request_subject)


def _move(
    action: Action, mover: str, update: pb.RequestUpdate, envelope: pb.Envelope
) -> Move:
    text = update.text
    return Move(
        action=action.value,
        by=mover,
        text=text,
        at=time_of(envelope.created_at),
        first_report=action in _REPORTS,
        result=text if action is Action.REPORT_RESULT else None,
        decline_reason=text if action is Action.DECLINE else None,
        escalation_reason=text if action is Action.ESCALATE else None,
        escalated_to=(update.escalated_to or None)
        if action is Action.ESCALATE
        else None,
    )


def _seen(update: pb.RequestUpdate) -> str:
    try:
        return state_from_update(update).status.value
    except ValueError:
        return "an unstated state"


def _held_incident(connection: Connection, subject: str) -> pb.IncidentReport | None:
    held = data.latest_of_txn(connection, subject)
    if held is None or held[0] != "incident":
        return None
    return read_stored(held[1]).record.incident
