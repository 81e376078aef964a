"""Queries over the workflow tables: requests, notices, escalations.

Functions whose names end in ``_txn`` run inside a transaction the caller
holds: the appliers' (``node.workflow.appliers``), so that a record's effect
commits with its log row. :class:`WorkflowStore` reads, and makes the few
writes that are not a record's effect (the deadline checker's overdue flag).
Rows never leave this module: callers get the frozen objects below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, func, insert, or_, select, update

from node.storage import Store
from node.storage import schema as t
from node.storage import workflow_tables as w
from node.workflow.requests import Disposition, Handling, RequestState

# Handling states in which the handler still owes a report.
_OWING = (Handling.OPEN.value, Handling.ACKNOWLEDGED.value, Handling.ACCEPTED.value)


@dataclass(frozen=True)
class NewRequest:
    """A request as a version of it is stored (published or received)."""

    subject_id: str
    ref: str
    requester: str
    handler: str
    incident_subject: str
    incident_title: str | None
    level: int | None
    exercise: bool
    ask: str
    log_seq: int
    created_at: datetime
    due_at: datetime


@dataclass(frozen=True)
class RequestRow(NewRequest):
    """A request as this node holds it: as published, with its state."""

    state: RequestState
    updated_at: datetime
    moves: int
    last_action: str | None
    last_by: str | None
    last_text: str | None
    first_report_at: datetime | None
    result: str | None
    decline_reason: str | None
    escalated_at: datetime | None
    escalation_reason: str | None
    escalated_to: str | None
    escalation_subject: str | None
    overdue_flagged_at: datetime | None
    # The node holds a retraction as the incident's newest version: the
    # request is withdrawn with it, no longer open work (read from the
    # subjects view, never stored on the request).
    incident_retracted: bool = False
    incident_retraction_reason: str | None = None


@dataclass(frozen=True)
class Move:
    """One move as it is recorded on a request row."""

    action: str
    by: str
    text: str
    at: datetime
    first_report: bool = False
    result: str | None = None
    decline_reason: str | None = None
    escalation_reason: str | None = None
    escalated_to: str | None = None


@dataclass(frozen=True)
class NoticeTarget:
    node: str
    acknowledged_at: datetime | None
    text: str | None


@dataclass(frozen=True)
class NoticeRow:
    subject_id: str
    ref: str
    origin: str
    title: str
    body: str
    log_seq: int
    sent_at: datetime
    received_from: str | None
    acknowledged_at: datetime | None
    ack_text: str | None
    targets: tuple[NoticeTarget, ...] = ()


@dataclass(frozen=True)
class EscalationRow:
    subject_id: str
    ref: str
    origin: str
    to_node: str
    incident_subject: str
    request_subject: str | None
    reason: str
    incident_title: str
    level: int | None
    category: str | None
    exercise: bool
    escalated_at: datetime
    log_seq: int
    received_from: str | None


# --- requests, inside the caller's transaction ------------------------------


def request_txn(connection: Connection, subject_id: str) -> RequestRow | None:
    row = connection.execute(
        _select_requests().where(w.requests.c.subject_id == subject_id)
    ).first()
    return _request(row) if row else None


def _select_requests() -> Select:
    """Requests with whether this node holds their incident retracted."""
    incident = t.subjects
    return select(
        w.requests,
        func.coalesce(incident.c.retracted, False).label("incident_retracted"),
        incident.c.retraction_reason.label("incident_retraction_reason"),
    ).select_from(
        w.requests.outerjoin(
            incident, incident.c.subject_id == w.requests.c.incident_subject
        )
    )


def _incident_live():
    """The condition of a request whose incident is not retracted here."""
    return or_(t.subjects.c.retracted.is_(None), t.subjects.c.retracted.is_(False))


def upsert_request_txn(connection: Connection, new: NewRequest) -> None:
    """Store a request, or a newer version of it: its ask and deadline change,
    its state stays."""
    values = {
        "incident_subject": new.incident_subject,
        "incident_title": new.incident_title,
        "level": new.level,
        "exercise": new.exercise,
        "ask": new.ask,
        "log_seq": new.log_seq,
        "due_at": new.due_at,
    }
    held = request_txn(connection, new.subject_id)
    if held is not None:
        if held.due_at != new.due_at:
            # A new deadline is watched afresh.
            values["overdue_flagged_at"] = None
        connection.execute(
            update(w.requests)
            .where(w.requests.c.subject_id == new.subject_id)
            .values(**values)
        )
        return
    connection.execute(
        insert(w.requests).values(
            subject_id=new.subject_id,
            ref=new.ref,
            requester=new.requester,
            handler=new.handler,
            created_at=new.created_at,
            updated_at=new.created_at,
            handling=Handling.OPEN.value,
            disposition=Disposition.ACTIVE.value,
            state=RequestState().status.value,
            moves=0,
            **values,
        )
    )


def move_request_txn(
    connection: Connection,
    subject_id: str,
    expected: RequestState,
    after: RequestState,
    move: Move,
) -> bool:
    """Compare-and-set: apply ``move`` only if the request is in ``expected``.

    The condition is part of the UPDATE, so of two transactions that both
    read ``expected`` only the first to write wins, on SQLite and on
    PostgreSQL (whose second UPDATE waits for the first and then matches
    nothing). Returns whether this one won.
    """
    values: dict[str, Any] = {
        "handling": after.handling.value,
        "disposition": after.disposition.value,
        "state": after.status.value,
        "updated_at": move.at,
        "moves": w.requests.c.moves + 1,
        "last_action": move.action,
        "last_by": move.by,
        "last_text": move.text,
    }
    if move.result is not None:
        values["result"] = move.result
    if move.decline_reason is not None:
        values["decline_reason"] = move.decline_reason
    if move.escalation_reason is not None:
        values.update(
            escalated_at=move.at,
            escalation_reason=move.escalation_reason,
            escalated_to=move.escalated_to,
        )
    changed = connection.execute(
        update(w.requests)
        .where(
            w.requests.c.subject_id == subject_id,
            w.requests.c.handling == expected.handling.value,
            w.requests.c.disposition == expected.disposition.value,
        )
        .values(**values)
    ).rowcount
    if changed and move.first_report:
        # The first report's time stays the first.
        connection.execute(
            update(w.requests)
            .where(
                w.requests.c.subject_id == subject_id,
                w.requests.c.first_report_at.is_(None),
            )
            .values(first_report_at=move.at)
        )
    return bool(changed)


def close_retracted_request_txn(
    connection: Connection, subject_id: str, at: datetime, note: str
) -> None:
    """A retracted request is closed on every node that holds it."""
    connection.execute(
        update(w.requests)
        .where(w.requests.c.subject_id == subject_id)
        .values(
            disposition=Disposition.CLOSED.value,
            state=Disposition.CLOSED.value,
            updated_at=at,
            moves=w.requests.c.moves + 1,
            last_action="retracted",
            last_text=note,
        )
    )


def claim_escalation_txn(
    connection: Connection, request_subject: str, escalation_subject: str
) -> bool:
    """Record the escalation sent for a request, unless one was already:
    False then, and the caller's transaction should not commit."""
    return bool(
        connection.execute(
            update(w.requests)
            .where(
                w.requests.c.subject_id == request_subject,
                w.requests.c.escalation_subject.is_(None),
            )
            .values(escalation_subject=escalation_subject)
        ).rowcount
    )


# --- notices and escalations, inside the caller's transaction ----------------


def notice_txn(connection: Connection, subject_id: str) -> NoticeRow | None:
    row = connection.execute(
        select(w.notices).where(w.notices.c.subject_id == subject_id)
    ).first()
    if row is None:
        return None
    return _notice(row, _targets_txn(connection, [subject_id]).get(subject_id, ()))


def upsert_notice_txn(
    connection: Connection,
    notice: NoticeRow,
    targets: Iterable[str],
) -> None:
    """Store a notice (or its newer version) and add any target not yet listed."""
    values = {"title": notice.title, "body": notice.body, "log_seq": notice.log_seq}
    changed = connection.execute(
        update(w.notices)
        .where(w.notices.c.subject_id == notice.subject_id)
        .values(**values)
    ).rowcount
    if not changed:
        connection.execute(
            insert(w.notices).values(
                subject_id=notice.subject_id,
                ref=notice.ref,
                origin=notice.origin,
                sent_at=notice.sent_at,
                received_from=notice.received_from,
                **values,
            )
        )
    listed = {
        t.node
        for t in _targets_txn(connection, [notice.subject_id]).get(
            notice.subject_id, ()
        )
    }
    new = sorted(set(targets) - listed)
    if new:
        connection.execute(
            insert(w.notice_targets),
            [{"notice_subject": notice.subject_id, "node": node} for node in new],
        )


def acknowledge_own_txn(
    connection: Connection, notice_subject: str, at: datetime, text: str
) -> bool:
    """This node's acknowledgement of a notice it received; False if it had one."""
    return bool(
        connection.execute(
            update(w.notices)
            .where(
                w.notices.c.subject_id == notice_subject,
                w.notices.c.acknowledged_at.is_(None),
            )
            .values(acknowledged_at=at, ack_text=text)
        ).rowcount
    )


def acknowledge_target_txn(
    connection: Connection,
    notice_subject: str,
    node: str,
    at: datetime,
    text: str,
    message_id: str,
) -> bool:
    """A target's acknowledgement, on the notice's origin; False if it had one."""
    return bool(
        connection.execute(
            update(w.notice_targets)
            .where(
                w.notice_targets.c.notice_subject == notice_subject,
                w.notice_targets.c.node == node,
                w.notice_targets.c.acknowledged_at.is_(None),
            )
            .values(acknowledged_at=at, ack_text=text, ack_message_id=message_id)
        ).rowcount
    )


def upsert_escalation_txn(connection: Connection, row: EscalationRow) -> None:
    """Store an escalation, or replace it with a newer version of it."""
    values = dict(row.__dict__)
    changed = connection.execute(
        update(w.escalations)
        .where(w.escalations.c.subject_id == row.subject_id)
        .values(**values)
    ).rowcount
    if not changed:
        connection.execute(insert(w.escalations).values(**values))


# --- reads, and the checker's writes -----------------------------------------


class WorkflowStore:
    """Reads over the workflow tables of one node's store."""

    def __init__(self, store: Store):
        self.store = store

    def request(self, subject_id: str) -> RequestRow | None:
        with self.store.read() as connection:
            return request_txn(connection, subject_id)

    def requests_with_ref(self, ref: str) -> list[RequestRow]:
        query = _select_requests().where(w.requests.c.ref == ref)
        return self._requests(query)

    def requests(self, include_closed: bool = False) -> list[RequestRow]:
        """Sent and received, the soonest due first.

        Gap (issue 3): a row keeps the last move (and the result, the
        reasons, the first report's time), not every move; the full history
        of a request is in the log as its request_update records, which no
        command lists per request yet.
        """
        query = _select_requests().order_by(
            w.requests.c.due_at, w.requests.c.subject_id
        )
        if not include_closed:
            query = query.where(w.requests.c.disposition != Disposition.CLOSED.value)
        return self._requests(query)

    def due_unflagged(self, now: datetime) -> list[RequestRow]:
        """Requests past their deadline, first report owed, not yet flagged;
        not those withdrawn with their incident."""
        query = _select_requests().where(
            w.requests.c.due_at <= now,
            w.requests.c.overdue_flagged_at.is_(None),
            *_owing(),
        )
        return self._requests(query)

    def flag_overdue(self, subject_id: str, now: datetime) -> bool:
        """Mark a request overdue, once: False if another step already did."""
        with self.store.write() as connection:
            return bool(
                connection.execute(
                    update(w.requests)
                    .where(
                        w.requests.c.subject_id == subject_id,
                        w.requests.c.overdue_flagged_at.is_(None),
                    )
                    .values(overdue_flagged_at=now)
                ).rowcount
            )

    def overdue_to_escalate(self, requester: str) -> list[RequestRow]:
        """This node's overdue requests, first report still owed, not escalated,
        not withdrawn with their incident."""
        query = _select_requests().where(
            w.requests.c.requester == requester,
            w.requests.c.overdue_flagged_at.is_not(None),
            w.requests.c.disposition == Disposition.ACTIVE.value,
            *_owing(),
        )
        return self._requests(query)

    def escalations_unsent(self, requester: str) -> list[RequestRow]:
        """This node's escalated requests whose escalation record is not yet out,
        but for those withdrawn with their incident: a retracted incident is
        not raised to the national node."""
        query = _select_requests().where(
            w.requests.c.requester == requester,
            w.requests.c.escalated_at.is_not(None),
            w.requests.c.escalated_to.is_not(None),
            w.requests.c.escalation_subject.is_(None),
            _incident_live(),
        )
        return self._requests(query)

    def notice(self, subject_id: str) -> NoticeRow | None:
        with self.store.read() as connection:
            return notice_txn(connection, subject_id)

    def notices_with_ref(self, ref: str) -> list[NoticeRow]:
        return self._notices(select(w.notices).where(w.notices.c.ref == ref))

    def notices(self) -> list[NoticeRow]:
        """Sent and received, newest first."""
        return self._notices(
            select(w.notices).order_by(
                w.notices.c.sent_at.desc(), w.notices.c.subject_id
            )
        )

    def escalations(self) -> list[EscalationRow]:
        """Sent and received, newest first."""
        query = select(w.escalations).order_by(
            w.escalations.c.escalated_at.desc(), w.escalations.c.subject_id
        )
        with self.store.read() as connection:
            return [_escalation(row) for row in connection.execute(query)]

    def envelope_at(self, seq: int) -> bytes:
        """The stored envelope of one log row."""
        with self.store.read() as connection:
            return connection.execute(
                select(t.log.c.envelope).where(t.log.c.seq == seq)
            ).scalar_one()

    def _requests(self, query: Select) -> list[RequestRow]:
        with self.store.read() as connection:
            return [_request(row) for row in connection.execute(query)]

    def _notices(self, query) -> list[NoticeRow]:
        with self.store.read() as connection:
            rows = connection.execute(query).all()
            targets = _targets_txn(connection, [row.subject_id for row in rows])
        return [_notice(row, targets.get(row.subject_id, ())) for row in rows]


def _owing():
    """Conditions of a request whose handler still owes its first report."""
    return (
        w.requests.c.first_report_at.is_(None),
        w.requests.c.handling.in_(_OWING),
        w.requests.c.disposition != Disposition.CLOSED.value,
        _incident_live(),
    )


def _targets_txn(
    connection: Connection, subjects: Sequence[str]
) -> dict[str, tuple[NoticeTarget, ...]]:
    if not subjects:
        return {}
    query = (
        select(w.notice_targets)
        .where(and_(w.notice_targets.c.notice_subject.in_(subjects)))
        .order_by(w.notice_targets.c.notice_subject, w.notice_targets.c.node)
    )
    found: dict[str, list[NoticeTarget]] = {}
    for row in connection.execute(query):
        found.setdefault(row.notice_subject, []).append(
            NoticeTarget(row.node, row.acknowledged_at, row.ack_text)
        )
    return {subject: tuple(targets) for subject, targets in found.items()}


def _request(row) -> RequestRow:
    return RequestRow(
        subject_id=row.subject_id,
        ref=row.ref,
        requester=row.requester,
        handler=row.handler,
        incident_subject=row.incident_subject,
        incident_title=row.incident_title,
        level=row.level,
        exercise=row.exercise,
        ask=row.ask,
        log_seq=row.log_seq,
        created_at=row.created_at,
        due_at=row.due_at,
        state=RequestState(Handling(row.handling), Disposition(row.disposition)),
        updated_at=row.updated_at,
        moves=row.moves,
        last_action=row.last_action,
        last_by=row.last_by,
        last_text=row.last_text,
        first_report_at=row.first_report_at,
        result=row.result,
        decline_reason=row.decline_reason,
        escalated_at=row.escalated_at,
        escalation_reason=row.escalation_reason,
        escalated_to=row.escalated_to,
        escalation_subject=row.escalation_subject,
        overdue_flagged_at=row.overdue_flagged_at,
        incident_retracted=bool(row.incident_retracted),
        incident_retraction_reason=row.incident_retraction_reason,
    )


def _notice(row, targets: tuple[NoticeTarget, ...]) -> NoticeRow:
    return NoticeRow(
        subject_id=row.subject_id,
        ref=row.ref,
        origin=row.origin,
        title=row.title,
        body=row.body,
        log_seq=row.log_seq,
        sent_at=row.sent_at,
        received_from=row.received_from,
        acknowledged_at=row.acknowledged_at,
        ack_text=row.ack_text,
        targets=targets,
    )


def _escalation(row) -> EscalationRow:
    return EscalationRow(
        **{name: getattr(row, name) for name in EscalationRow.__dataclass_fields__}
    )


def latest_of_txn(connection: Connection, subject_id: str) -> tuple[str, bytes] | None:
    """(kind, envelope) of the newest version of a subject held here."""
    row = connection.execute(
        select(t.log.c.kind, t.log.c.envelope)
        .where(t.log.c.subject_id == subject_id)
        .order_by(t.log.c.subject_version.desc(), t.log.c.seq.desc())
        .limit(1)
    ).first()
    return (row.kind, row.envelope) if row else None
