"""Subjects: each subject's newest version and retraction, and who holds it.

The ``subjects`` table is a view of the log, one row per subject, written by
``apply_version_txn`` in the transaction of every log row (an applier calls
it), so the view and the log never disagree. Searches read it for a subject's
category and whether it is retracted; ``guantong show`` reads the log itself.

Who holds what this node published is not kept anywhere of its own:
``Subjects.holders`` reads it from the outbox and the decisions, the record of
what was actually queued and under which agreement, so it cannot drift from
what was sent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, true, update

from node.storage import schema as t
from node.storage.store import Store

RETRACTION = "retraction"


@dataclass(frozen=True)
class VersionApplied:
    """One stored version, as the subjects view needs it."""

    subject_id: str
    origin: str
    ref: str
    # The record's kind; ``retraction`` for a retraction.
    kind: str
    version: int
    seq: int
    received_from: str | None
    created_at: datetime
    # An incident's category, or a topic statement's.
    category: str | None = None
    retraction_reason: str = ""


@dataclass(frozen=True)
class SubjectState:
    subject_id: str
    origin: str
    ref: str
    kind: str
    category: str | None
    latest_version: int
    received_from: str | None
    updated_at: datetime
    retracted: bool
    retracted_version: int | None
    retraction_reason: str | None


@dataclass(frozen=True)
class Holder:
    """A node that holds (or is about to hold) a version this node published."""

    node: str
    # The newest version sent to it.
    version: int
    # The agreement that version was sent under.
    agreement_id: str | None
    agreement_version: int | None
    withheld_fields: tuple[str, ...]
    # PENDING or DELIVERED.
    delivery_state: str


# Run for every stored record: built once so SQLAlchemy reuses their compiled form.
_SUBJECT_ROW = select(t.subjects.c.latest_version, t.subjects.c.kind).where(
    t.subjects.c.subject_id == bindparam("subject_id")
)
_INSERT_SUBJECT = insert(t.subjects)


def apply_version_txn(connection: Connection, applied: VersionApplied) -> None:
    """Bring the subject's row up to ``applied``; older versions change nothing.

    Read, then insert or update: the store's write lock serialises this within
    a process. Two gateway replicas on one PostgreSQL database inserting the
    first row of one subject at once collide on the primary key; the loser's
    transaction, log row included, rolls back and its sender retries.
    """
    row = connection.execute(_SUBJECT_ROW, {"subject_id": applied.subject_id}).first()
    if row is not None and applied.version <= row.latest_version:
        return

    values: dict[str, object] = {
        "latest_version": applied.version,
        "latest_seq": applied.seq,
        "received_from": applied.received_from,
        "updated_at": applied.created_at,
    }
    if applied.kind == RETRACTION:
        values.update(
            retracted=True,
            retracted_version=applied.version,
            retraction_reason=applied.retraction_reason,
        )
    else:
        values["category"] = applied.category

    if row is not None:
        connection.execute(
            update(t.subjects)
            .where(t.subjects.c.subject_id == applied.subject_id)
            .values(values)
        )
        return
    connection.execute(
        _INSERT_SUBJECT,
        {
            "subject_id": applied.subject_id,
            "origin": applied.origin,
            "ref": applied.ref,
            "kind": _kind_before_retraction_txn(connection, applied),
            "retracted": False,
            **values,
        },
    )


def _kind_before_retraction_txn(connection: Connection, applied: VersionApplied) -> str:
    """The subject's own kind; a retraction is a version of it, not its kind."""
    if applied.kind != RETRACTION:
        return applied.kind
    # The first row for a retracted subject: its earlier versions were stored
    # before this view existed. Their kind is in the log.
    kind = connection.execute(
        select(t.log.c.kind)
        .where(t.log.c.subject_id == applied.subject_id, t.log.c.kind != RETRACTION)
        .order_by(t.log.c.subject_version.desc())
        .limit(1)
    ).scalar_one_or_none()
    return kind or RETRACTION


class Subjects:
    """Reads of the subjects view and of delivery history, over a Store."""

    def __init__(self, store: Store):
        self.store = store

    def state(self, subject_id: str) -> SubjectState | None:
        with self.store.read() as connection:
            row = connection.execute(
                select(t.subjects).where(t.subjects.c.subject_id == subject_id)
            ).first()
        if row is None:
            return None
        return SubjectState(
            subject_id=row.subject_id,
            origin=row.origin,
            ref=row.ref,
            kind=row.kind,
            category=row.category,
            latest_version=row.latest_version,
            received_from=row.received_from,
            updated_at=row.updated_at,
            retracted=row.retracted,
            retracted_version=row.retracted_version,
            retraction_reason=row.retraction_reason,
        )

    def relayed_among(self, subject_ids: Collection[str]) -> set[str]:
        """Which of these subjects, received here, this node has passed on."""
        if not subject_ids:
            return set()
        query = (
            select(t.log.c.subject_id)
            .distinct()
            .select_from(t.log.join(t.outbox, t.outbox.c.log_seq == t.log.c.seq))
            .where(
                t.log.c.received_from.is_not(None),
                t.log.c.subject_id.in_(list(subject_ids)),
            )
        )
        with self.store.read() as connection:
            return set(connection.execute(query).scalars())

    def holders(
        self, subject_id: str, relayed: bool = False, before: int | None = None
    ) -> list[Holder]:
        """Nodes a version of this node's subject was delivered or queued to;
        with ``relayed``, nodes this node passed a received subject on to;
        with ``before``, counting only versions older than that one (who held
        the subject when that version was published).

        A dead letter is not holding: the peer refused that version. A row
        still pending counts, since the peer will get it before anything
        queued after it; if that peer then refuses it, it refuses the update
        too (it holds nothing to update), and both end as dead letters.
        """
        query = (
            select(
                t.outbox.c.peer,
                t.outbox.c.state,
                t.log.c.subject_version,
                t.decisions.c.agreement_id,
                t.decisions.c.agreement_version,
                t.decisions.c.withheld_fields,
            )
            .select_from(
                t.outbox.join(t.log, t.log.c.seq == t.outbox.c.log_seq).outerjoin(
                    t.decisions,
                    (t.decisions.c.log_seq == t.outbox.c.log_seq)
                    & (t.decisions.c.receiver == t.outbox.c.peer),
                )
            )
            .where(
                t.log.c.subject_id == subject_id,
                t.log.c.received_from.is_not(None)
                if relayed
                else t.log.c.received_from.is_(None),
                t.outbox.c.state.in_((t.PENDING, t.DELIVERED)),
                t.log.c.subject_version < before if before is not None else true(),
            )
            .order_by(t.log.c.subject_version)
        )
        newest: dict[str, Holder] = {}
        with self.store.read() as connection:
            for row in connection.execute(query):
                newest[row.peer] = Holder(
                    node=row.peer,
                    version=row.subject_version,
                    agreement_id=row.agreement_id,
                    agreement_version=row.agreement_version,
                    withheld_fields=t.field_names(row.withheld_fields),
                    delivery_state=row.state,
                )
        return sorted(newest.values(), key=lambda holder: holder.node)
