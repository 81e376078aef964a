"""What a stored record does to the subject, statement and case views.

Each function here is an applier (``node.appliers``): it runs in the
transaction of the log row it derives from, whether the record was published
here or received, so a view never shows what the log does not hold.

- Every version of every kind updates its subject's row: newest version,
  category, and for a retraction the retracted mark, which nothing after it
  clears (the store refuses versions after a retraction).
- A statement's newest version is what the library searches; a statement that
  supersedes another of the same origin marks that one superseded, in either
  order of arrival.
- An incident whose newest version is closed is a case; one reopened is not.
"""

from __future__ import annotations

from datetime import UTC

from guantong.v1 import records_pb2 as pb
from sqlalchemy import Connection

from node.appliers import Applied, Appliers
from node.records import CATEGORY_CODES, KINDS
from node.storage.library import (
    CaseApplied,
    StatementApplied,
    apply_case_txn,
    apply_statement_txn,
    normalise,
    reopen_case_txn,
)
from node.storage.subjects import VersionApplied, apply_version_txn


def register(appliers: Appliers) -> None:
    for kind in KINDS:
        appliers.register(kind, apply_subject)
    appliers.register("statement", apply_statement)
    appliers.register("incident", apply_case)


def apply_subject(connection: Connection, applied: Applied) -> None:
    envelope, record = applied.opened.envelope, applied.opened.record
    kind = applied.opened.kind
    apply_version_txn(
        connection,
        VersionApplied(
            subject_id=envelope.subject_id,
            origin=envelope.origin_node,
            ref=envelope.ref,
            kind=kind,
            version=envelope.subject_version,
            seq=applied.seq,
            received_from=applied.received_from,
            created_at=envelope.created_at.ToDatetime(tzinfo=UTC),
            category=_category(record),
            retraction_reason=record.retraction.reason if kind == "retraction" else "",
        ),
    )


def apply_statement(connection: Connection, applied: Applied) -> None:
    envelope = applied.opened.envelope
    statement = applied.opened.record.statement
    apply_statement_txn(
        connection,
        StatementApplied(
            subject_id=envelope.subject_id,
            origin=envelope.origin_node,
            ref=envelope.ref,
            version=envelope.subject_version,
            seq=applied.seq,
            incident_subject=statement.incident_subject or None,
            supersedes=statement.supersedes or None,
            issued_at=envelope.created_at.ToDatetime(tzinfo=UTC),
            received_from=applied.received_from,
            search_text=_searchable(
                statement.text, *statement.topic_keywords, statement.approved_by
            ),
        ),
    )


def apply_case(connection: Connection, applied: Applied) -> None:
    envelope = applied.opened.envelope
    incident = applied.opened.record.incident
    if incident.status != pb.INCIDENT_CLOSED:
        reopen_case_txn(connection, envelope.subject_id)
        return
    apply_case_txn(
        connection,
        CaseApplied(
            subject_id=envelope.subject_id,
            origin=envelope.origin_node,
            ref=envelope.ref,
            version=envelope.subject_version,
            seq=applied.seq,
            closed_at=envelope.created_at.ToDatetime(tzinfo=UTC),
            received_from=applied.received_from,
            search_text=_searchable(
                incident.title, incident.summary, incident.review, *incident.keywords
            ),
        ),
    )


def _category(record: pb.Record) -> str | None:
    body = record.WhichOneof("body")
    if body == "incident":
        return CATEGORY_CODES.get(record.incident.category)
    if body == "statement":
        return CATEGORY_CODES.get(record.statement.topic_category)
    return None


def _searchable(*parts: str) -> str:
    # A line break between parts, so a term cannot match across two of them.
    return "\n".join(normalise(part) for part in parts if part)
