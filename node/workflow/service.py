"""The workflow operations staff run through the local API.

Each operation checks what it can up front, so that staff get a clear
refusal (the request's state, the party, the missing reason), and then
publishes a record through the node's Publisher. The record's effect on the
workflow tables is applied in the publishing transaction
(:mod:`node.workflow.appliers`), where a request move is checked once more
by compare-and-set: two moves that both passed the first check cannot both
win.

An escalation of a request is two publishes: the requester's escalate move,
to the handler, then the escalation record with the incident, to the
national node. The request row remembers the escalation record once it is
out; :meth:`Workflows.send_unsent_escalations`, which the deadline checker
runs on every step, sends the record of any escalated request that lacks
one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from guantong.v1 import records_pb2 as pb

from gateway.policy import PolicyHolder
from gateway.policy.model import CHINA_TIME
from node.clock import Clock
from node.config import WorkflowConfig
from node.envelopes import read_stored
from node.errors import GuantongError, InvalidRecord
from node.publishing import Published, Publisher
from node.records import facts_of, subject_id
from node.storage import Store
from node.storage.workflows import EscalationRow, NoticeRow, RequestRow, WorkflowStore
from node.workflow.appliers import EscalationAlreadySent
from node.workflow.requests import Action, RequestWithdrawn, Role, transition
from node.workflow.wire import (
    action_to_pb,
    disposition_to_pb,
    handling_to_pb,
    workflow_ref,
)

log = structlog.get_logger(__name__)

OVERDUE_AUTHOR = "deadline-checker"


class NotHeld(GuantongError):
    """No request, notice or incident by that name is held by this node."""

    def __init__(self, what: str, name: str, node: str, hint: str = ""):
        self.what = what
        self.name = name
        super().__init__(f"no {what} {name!r} is held by {node}{hint}")


class Ambiguous(GuantongError):
    """A ref names several subjects here; the subject id is needed."""

    def __init__(self, what: str, name: str, subjects: Sequence[str]):
        self.subjects = tuple(subjects)
        super().__init__(
            f"{what} ref {name!r} names {len(subjects)} subjects here: "
            f"{', '.join(subjects)}; give the subject id"
        )


class NotAllowedNow(GuantongError):
    """An operation the node cannot carry out as things stand: a notice already
    acknowledged, a move no agreement would carry to the other party."""


@dataclass(frozen=True)
class Moved:
    request: RequestRow
    published: Published
    # For an escalation: the escalation record, when it went out.
    escalation: Published | None = None


class Workflows:
    """One node's workflow operations over its store and publisher."""

    def __init__(
        self,
        node_id: str,
        store: Store,
        publisher: Publisher,
        policies: PolicyHolder,
        clock: Clock,
        config: WorkflowConfig,
    ):
        self.node_id = node_id
        self.store = store
        self.publisher = publisher
        self.policies = policies
        self.clock = clock
        self.config = config
        self.data = WorkflowStore(store)
        # The move and the checker may both try to send an escalation record.
        self._escalating = threading.Lock()

    # --- requests ----------------------------------------------------------------

    def requests(self, include_closed: bool = False) -> list[RequestRow]:
        return self.data.requests(include_closed)

    def find_request(self, name: str) -> RequestRow:
        if "/" in name:
            row = self.data.request(name)
            if row is None:
                raise NotHeld("request", name, self.node_id)
            return row
        rows = self.data.requests_with_ref(name)
        if not rows:
            raise NotHeld("request", name, self.node_id)
        if len(rows) > 1:
            raise Ambiguous("request", name, [row.subject_id for row in rows])
        return rows[0]

    def role_of(self, row: RequestRow) -> Role:
        return Role.REQUESTER if row.requester == self.node_id else Role.HANDLER

    def move(
        self, name: str, action: Action, text: str = "", author_unit: str = ""
    ) -> Moved:
        """Make ``action`` on request ``name`` as this node's party to it."""
        return self._move(self.find_request(name), action, text, author_unit, None)

    def escalate_overdue(self, row: RequestRow) -> Moved | None:
        """Escalate an overdue request where its agreement says so; else None."""
        target = self.overdue_escalation_target(row)
        if target is None:
            return None
        due = row.due_at.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M")
        reason = (
            f"逾期未报 overdue: no first report from {row.handler} by {due} (UTC+8)"
        )
        moved = self._move(row, Action.ESCALATE, reason, OVERDUE_AUTHOR, target)
        log.warning(
            "request.overdue_escalated",
            request=row.subject_id,
            to=target,
            escalation=moved.escalation.subject_id if moved.escalation else None,
        )
        return moved

    def overdue_escalation_target(self, row: RequestRow) -> str | None:
        """``escalate_overdue_to`` of the agreement the request went under."""
        for decision in self.store.decisions_for(row.log_seq):
            if decision.receiver == row.handler and decision.allowed:
                agreement = self.policies.current.agreement(decision.agreement_id or "")
                return agreement.escalate_overdue_to if agreement else None
        return None

    def send_unsent_escalations(self) -> list[str]:
        """Send the escalation record of every escalated request lacking one."""
        sent = []
        for row in self.data.escalations_unsent(self.node_id):
            try:
                published = self._send_escalation(row)
            except Exception:
                log.exception("request.escalation_deferred", request=row.subject_id)
                continue
            if published is not None:
                sent.append(row.subject_id)
        return sent

    def _move(
        self,
        row: RequestRow,
        action: Action,
        text: str,
        author_unit: str,
        escalate_to: str | None,
    ) -> Moved:
        role = self.role_of(row)
        if row.incident_retracted:
            raise RequestWithdrawn(row.subject_id, row.incident_subject, action)
        # Refuse early and clearly; the applier checks again by compare-and-set.
        transition(row.state, role, action, text, request=row.subject_id)

        other = row.handler if role is Role.REQUESTER else row.requester
        update = pb.RequestUpdate(
            request_subject=row.subject_id,
            incident_subject=row.incident_subject,
            to_node=other,
            action=action_to_pb(action),
            text=text,
            from_handling=handling_to_pb(row.state.handling),
            from_disposition=disposition_to_pb(row.state.disposition),
        )
        if action is Action.ESCALATE:
            update.escalated_to = escalate_to or self.config.national_node
        record = pb.Record(request_update=update)
        self._check_reaches(record, other, row.incident_subject, row.subject_id)
        if action is Action.ESCALATE:
            # The national node must be able to hear of it, or it is no
            # escalation.
            escalation_record = self._escalation_record(
                row.incident_subject,
                text,
                update.escalated_to,
                row.subject_id,
                row.incident_title,
            )
            self._check_reaches(
                escalation_record,
                update.escalated_to,
                row.incident_subject,
                row.subject_id,
            )
        published = self.publisher.publish(
            workflow_ref(row.subject_id, action.value), record, author_unit
        )
        after = self.data.request(row.subject_id)
        assert after is not None
        log.info(
            "request.moved",
            request=row.subject_id,
            action=action.value,
            role=role.value,
            state=after.state.status.value,
            handling=after.state.handling.value,
            message_id=published.message_id,
        )

        escalation: Published | None = None
        if action is Action.ESCALATE:
            try:
                escalation = self._send_escalation(after)
            except Exception:
                # The move stands; the deadline checker's next step sends the
                # escalation record (send_unsent_escalations).
                log.exception("request.escalation_deferred", request=row.subject_id)
            after = self.data.request(row.subject_id) or after
        return Moved(after, published, escalation)

    def _check_reaches(
        self, record: pb.Record, receiver: str, incident_subject: str, about: str
    ) -> None:
        """What the receiver would never get is not published: a move the other
        party never sees leaves the two copies of a request apart for good."""
        incident = self._held_incident(incident_subject)
        facts = facts_of(record, self.node_id, incident)
        decision = self.policies.current.decide(
            facts, self.node_id, receiver, self.clock.now()
        )
        kind = "move on" if record.HasField("request_update") else "escalation of"
        what = f"the {kind} {about}"
        if not decision.allowed:
            raise NotAllowedNow(
                f"{what} would not reach {receiver}: {decision.rule}: {decision.reason}"
            )
        if receiver not in self.publisher.peers():
            raise NotAllowedNow(
                f"{what} would not reach {receiver}: it is not a peer of {self.node_id}"
            )

    def _held_incident(self, incident_subject: str) -> pb.IncidentReport | None:
        held = self.store.latest(incident_subject)
        if held is None or held.kind != "incident":
            return None
        return read_stored(held.envelope).record.incident

    def _send_escalation(self, row: RequestRow) -> Published | None:
        # The lock keeps this process from publishing twice; across replicas
        # the applier's claim on the request row refuses the second record.
        with self._escalating:
            current = self.data.request(row.subject_id)
            if (
                current is None
                or current.escalation_subject
                or not current.escalated_to
            ):
                return None
            record = self._escalation_record(
                current.incident_subject,
                current.escalation_reason or "",
                current.escalated_to,
                current.subject_id,
                current.incident_title,
            )
            try:
                return self._publish_escalation(record, author_unit="")
            except EscalationAlreadySent:
                return None

    # --- escalating an incident ----------------------------------------------------

    def escalate_incident(
        self, name: str, reason: str, to_node: str = "", author_unit: str = ""
    ) -> tuple[EscalationRow, Published]:
        """Raise an incident this node holds to the national node (提级发声)."""
        if not reason.strip():
            raise InvalidRecord("reason", "an escalation needs a reason")
        incident_subject = name if "/" in name else subject_id(self.node_id, name)
        held = self.store.latest(incident_subject)
        if held is None or held.kind != "incident":
            hint = (
                ""
                if "/" in name
                else "; for an incident received from another node give its subject id"
            )
            raise NotHeld("incident", name, self.node_id, hint)
        record = self._escalation_record(
            incident_subject, reason, to_node or self.config.national_node
        )
        self._check_reaches(
            record, record.escalation.to_node, incident_subject, incident_subject
        )
        published = self._publish_escalation(record, author_unit)
        row = next(
            e for e in self.data.escalations() if e.subject_id == published.subject_id
        )
        return row, published

    def escalations(self) -> list[EscalationRow]:
        return self.data.escalations()

    def escalation_incident(self, row: EscalationRow) -> tuple[pb.IncidentReport, bool]:
        """The incident an escalation carries, and whether this node holds the
        incident itself (or only the escalation's snapshot of it)."""
        envelope = self.data.envelope_at(row.log_seq)
        snapshot = read_stored(envelope).record.escalation.incident
        held = self.store.latest(row.incident_subject)
        return snapshot, held is not None and held.kind == "incident"

    def _escalation_record(
        self,
        incident_subject: str,
        reason: str,
        to_node: str,
        request_subject: str = "",
        fallback_title: str | None = None,
    ) -> pb.Record:
        escalation = pb.Escalation(
            incident_subject=incident_subject,
            request_subject=request_subject,
            to_node=to_node,
            reason=reason,
        )
        incident = self._held_incident(incident_subject)
        if incident is not None:
            # Gap (issue 3): the snapshot goes whole. Withhold rules are
            # written per kind (incident.entities) and no agreement towards
            # the national node withholds incident fields today; one that
            # does would not see them cut from an escalation's copy.
            escalation.incident.CopyFrom(incident)
        else:
            escalation.incident.title = fallback_title or incident_subject
        return pb.Record(escalation=escalation)

    def _publish_escalation(self, record: pb.Record, author_unit: str) -> Published:
        escalation = record.escalation
        published = self.publisher.publish(
            workflow_ref(
                escalation.request_subject or escalation.incident_subject, "escalate"
            ),
            record,
            author_unit,
        )
        log.info(
            "incident.escalated",
            incident=escalation.incident_subject,
            request=escalation.request_subject or None,
            to=escalation.to_node,
            escalation=published.subject_id,
            queued=[d.receiver for d in published.decisions if d.delivery_state],
        )
        return published

    # --- notices ---------------------------------------------------------------------

    def send_notice(
        self,
        title: str,
        body: str = "",
        to_nodes: Sequence[str] = (),
        ref: str = "",
        author_unit: str = "",
    ) -> tuple[NoticeRow, Published]:
        """Send a notice (通报) to ``to_nodes``, or to every node it may reach."""
        if not ref:
            day = self.clock.now().astimezone(CHINA_TIME).strftime("%Y%m%d")
            ref = workflow_ref(f"TB-{day}", "notice")
        record = pb.Record(
            notice=pb.Notice(title=title, body=body, to_nodes=list(to_nodes))
        )
        published = self.publisher.publish(ref, record, author_unit)
        notice = self.data.notice(published.subject_id)
        assert notice is not None
        log.info(
            "notice.sent",
            notice=notice.subject_id,
            targets=[target.node for target in notice.targets],
        )
        return notice, published

    def acknowledge_notice(
        self, name: str, text: str = "", author_unit: str = ""
    ) -> tuple[NoticeRow, Published]:
        notice = self.find_notice(name)
        if notice.origin == self.node_id:
            raise NotAllowedNow(f"{notice.subject_id} is this node's own notice")
        if notice.acknowledged_at is not None:
            raise NotAllowedNow(
                f"{notice.subject_id} was acknowledged at "
                f"{notice.acknowledged_at.isoformat()}"
            )
        record = pb.Record(
            notice_ack=pb.NoticeAck(notice_subject=notice.subject_id, text=text)
        )
        published = self.publisher.publish(
            workflow_ref(notice.subject_id, "ack"), record, author_unit
        )
        log.info("notice.acknowledged", notice=notice.subject_id, to=notice.origin)
        return self.find_notice(notice.subject_id), published

    def find_notice(self, name: str) -> NoticeRow:
        if "/" in name:
            notice = self.data.notice(name)
            if notice is None:
                raise NotHeld("notice", name, self.node_id)
            return notice
        found = self.data.notices_with_ref(name)
        if not found:
            raise NotHeld("notice", name, self.node_id)
        if len(found) > 1:
            raise Ambiguous("notice", name, [n.subject_id for n in found])
        return found[0]

    def notices(self) -> list[NoticeRow]:
        return self.data.notices()
