"""The node's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them.

- ``log``: every record this node published or received, append-only. Rows
  with ``received_from`` NULL were published here.
- ``decisions``: for each published record, what the agreements said for every
  known node, stored in the same transaction as the record.
- ``outbox``: one row per record and peer that may receive it, holding the
  envelope exactly as that peer gets it (fields withheld for that hop), and
  once settled the peer's answer: its version of the agreement and the fields
  its copy withheld beyond ours.
- ``peer_state``: the per-peer backoff, so a restart resumes it.
- ``refusals``: messages a peer sent that we refused, for the audit trail
  (stale versions, recorded no-ops, among them), with the agreement and
  version the envelope named and our version of that agreement.
- ``subjects``, ``statements``, ``cases``: views of the log, one row per
  subject, written by appliers in the transaction of the log row they derive
  from (``node.lifecycle``): a subject's newest version and whether it is
  retracted; the statement library; closed incidents with their review.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way in and out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware times")
        return value.astimezone(UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return (
            value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        )


# SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
NodeId = String(16)
Stamp = UtcDateTime()

metadata = MetaData()

log = Table(
    "log",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("origin", NodeId, nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subject_id", String(96), nullable=False),
    Column("subject_version", Integer, nullable=False),
    Column("ref", String(64), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("received_from", NodeId, nullable=True),
    Column("stored_at", Stamp, nullable=False),
    UniqueConstraint("origin", "message_id", name="uq_log_origin_message"),
    UniqueConstraint("subject_id", "subject_version", name="uq_log_subject_version"),
    Index("ix_log_received", "received_from", "seq"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    Column("receiver", NodeId, nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("agreement_id", String(64), nullable=True),
    Column("agreement_version", Integer, nullable=True),
    Column("rule", String(160), nullable=False),
    Column("reason", Text, nullable=False),
    Column("withheld_fields", Text, nullable=False, default=""),
    UniqueConstraint("log_seq", "receiver", name="uq_decisions_record_receiver"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("peer", NodeId, nullable=False),
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Stamp, nullable=False),
    Column("settled_at", Stamp, nullable=True),
    Column("outcome", Text, nullable=True),
    # The peer's answer about its copy of the agreement the envelope names,
    # when it gave one (migration 0004): its id and version, and the fields
    # it withheld beyond those sent, comma-separated.
    Column("peer_agreement_id", String(64), nullable=True),
    Column("peer_agreement_version", Integer, nullable=True),
    Column("withheld_by_peer", Text, nullable=True),
    Index("ix_outbox_peer_state", "peer", "state", "id"),
    # Who holds a subject is read through here (migration 0002).
    Index("ix_outbox_log_seq", "log_seq"),
)

peer_state = Table(
    "peer_state",
    metadata,
    Column("peer", NodeId, primary_key=True),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Stamp, nullable=True),
    Column("last_error", Text, nullable=True),
)

refusals = Table(
    "refusals",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", Stamp, nullable=False),
    Column("sender", NodeId, nullable=False),
    Column("origin", NodeId, nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    # The agreement and version the envelope was stamped with, and the version
    # of it in force here (0: not held) when refused (migration 0004).
    Column("agreement_id", String(64), nullable=True),
    Column("agreement_version", Integer, nullable=True),
    Column("own_agreement_version", Integer, nullable=True),
)


def field_names(column_value: str | None) -> tuple[str, ...]:
    """Field names kept comma-separated in one text column, as a tuple."""
    return tuple(name for name in (column_value or "").split(",") if name)


# Outbox states.
PENDING = "PENDING"
DELIVERED = "DELIVERED"
DEAD_LETTER = "DEAD_LETTER"


# --- views of the log kept by appliers (migration 0002) ---------------------

subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(96), primary_key=True),
    Column("origin", NodeId, nullable=False),
    Column("ref", String(64), nullable=False),
    # What the subject is; a retraction is a version of it, not its kind.
    Column("kind", String(16), nullable=False),
    # An incident's category, or a topic statement's; what searches filter on.
    Column("category", String(32), nullable=True),
    Column("latest_version", Integer, nullable=False),
    Column("latest_seq", Id, ForeignKey("log.seq"), nullable=False),
    # The peer that delivered the newest version; NULL on the origin.
    Column("received_from", NodeId, nullable=True),
    Column("updated_at", Stamp, nullable=False),
    Column("retracted", Boolean, nullable=False, default=False),
    Column("retracted_version", Integer, nullable=True),
    Column("retraction_reason", Text, nullable=True),
)

statements = Table(
    "statements",
    metadata,
    Column("subject_id", String(96), primary_key=True),
    Column("origin", NodeId, nullable=False),
    Column("ref", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    # The statement's category is its topic's or its incident's, read from
    # ``subjects`` when searching, so it follows the incident's newest version.
    Column("incident_subject", String(96), nullable=True),
    Column("supersedes", String(96), nullable=True),
    Column("superseded_by", String(96), nullable=True),
    Column("issued_at", Stamp, nullable=False),
    Column("received_from", NodeId, nullable=True),
    # NFKC-normalised, case-folded text, keywords and approver, for substring
    # search (see node.storage.library).
    Column("search_text", Text, nullable=False),
    Index("ix_statements_issued", "issued_at"),
    Index("ix_statements_supersedes", "supersedes"),
)

cases = Table(
    "cases",
    metadata,
    Column("subject_id", String(96), primary_key=True),
    Column("origin", NodeId, nullable=False),
    Column("ref", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    Column("closed_at", Stamp, nullable=False),
    Column("received_from", NodeId, nullable=True),
    # Normalised title, summary, review and keywords.
    Column("search_text", Text, nullable=False),
    Index("ix_cases_closed", "closed_at"),
)

# The text (as a fingerprint) of every agreement version this node enforced,
# so that an agreement changed without a new version is refused even across
# a restart.
agreement_texts = Table(
    "agreement_texts",
    metadata,
    Column("agreement_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("first_loaded_at", Stamp, nullable=False),
)
