"""The node's store: one append-only log, the outbox beside it, one writer.

Every write is one transaction that takes the store's write lock, so SQLite
never sees two writers and a publish, its decisions and its outbox rows commit
together or not at all. SQLite runs in WAL mode with ``synchronous=FULL``:
nothing is acknowledged to a client or a peer before it is on disk.
PostgreSQL is used when the configuration gives its URL; the SQL here is the
portable subset both accept.

Functions whose names end in ``_txn`` run inside a transaction the caller
holds. Rows never leave this module: callers get the plain objects in
``node.storage.types``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import resources

import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from node.storage import schema as t
from node.storage.types import (
    AgreementStamp,
    DecisionRow,
    LogEntry,
    NewEntry,
    OutboxItem,
    PeerAnswer,
    PeerBackoff,
    PeerCounts,
    Received,
    ReceiveOutcome,
    Refusal,
)

log = structlog.get_logger(__name__)

# Runs inside the append's transaction: (connection, log seq, the entry).
ApplyHook = Callable[[Connection, int, NewEntry], None]
# Runs in the receive's transaction before a message is stored: a reason
# refuses it (not stored, not applied), None lets it through.
CheckHook = Callable[[Connection, NewEntry], str | None]


# Statements run once per message on the hot paths, built once: SQLAlchemy
# then reuses their compiled form instead of rebuilding each per call.
_INSERT_LOG = insert(t.log)
_HELD_BY_ID = select(t.log.c.content_sha256).where(
    t.log.c.origin == bindparam("origin"), t.log.c.message_id == bindparam("message_id")
)
_HELD_BY_VERSION = select(t.log.c.content_sha256).where(
    t.log.c.subject_id == bindparam("subject_id"),
    t.log.c.subject_version == bindparam("subject_version"),
)
_NEWEST_VERSION = (
    select(t.log.c.subject_version, t.log.c.kind)
    .where(t.log.c.subject_id == bindparam("subject_id"))
    .order_by(t.log.c.subject_version.desc())
    .limit(1)
)
_LATEST = (
    select(t.log)
    .where(t.log.c.subject_id == bindparam("subject_id"))
    .order_by(t.log.c.subject_version.desc(), t.log.c.seq.desc())
    .limit(1)
)


_SETTLE_OUTBOX = update(t.outbox).where(
    t.outbox.c.id == bindparam("row_id"), t.outbox.c.peer == bindparam("row_peer")
)


def content_digest(
    envelope_payload: bytes, kind: str, subject_id: str, version: int
) -> str:
    """What makes two copies of one message the same message."""
    digest = hashlib.sha256()
    for part in (
        kind.encode(),
        subject_id.encode(),
        str(version).encode(),
        envelope_payload,
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class Store:
    """A node's database. Thread-safe; one instance per node process."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine: Engine = _create_engine(url)
        self._write_lock = threading.Lock()

    def migrate(self) -> None:
        """Bring the schema to the newest migration."""
        config = AlembicConfig()
        config.set_main_option(
            "script_location", str(resources.files("node.storage") / "migrations")
        )
        with self._write_lock, self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction; commits on exit, rolls back on error."""
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    # --- publishing ---------------------------------------------------------

    def append_published(
        self,
        entry: NewEntry,
        decisions: Sequence[DecisionRow],
        outbox: Sequence[tuple[str, bytes]],
        now: datetime,
        apply: ApplyHook | None = None,
    ) -> int:
        """Store a record published here, its decisions and outbox rows; one txn.

        ``apply`` runs in the same transaction, after the log row is written,
        for the record's effects on other tables.
        """
        with self.write() as connection:
            seq = self._append_txn(connection, entry, None, now)
            if apply is not None:
                apply(connection, seq, entry)
            self._route_txn(connection, seq, decisions, outbox, now)
        return seq

    def route_held(
        self,
        seq: int,
        decisions: Sequence[DecisionRow],
        outbox: Sequence[tuple[str, bytes]],
        now: datetime,
    ) -> None:
        """Decisions and outbox rows for a record already in the log (a relay)."""
        with self.write() as connection:
            self._route_txn(connection, seq, decisions, outbox, now)

    def _route_txn(
        self,
        connection: Connection,
        seq: int,
        decisions: Sequence[DecisionRow],
        outbox: Sequence[tuple[str, bytes]],
        now: datetime,
    ) -> None:
        if decisions:
            connection.execute(
                insert(t.decisions),
                [
                    {
                        "log_seq": seq,
                        "receiver": d.receiver,
                        "allowed": d.allowed,
                        "agreement_id": d.agreement_id,
                        "agreement_version": d.agreement_version,
                        "rule": d.rule[:160],
                        "reason": d.reason,
                        "withheld_fields": ",".join(d.withheld_fields),
                    }
                    for d in decisions
                ],
            )
        if outbox:
            connection.execute(
                insert(t.outbox),
                [
                    {
                        "peer": peer,
                        "log_seq": seq,
                        "envelope": envelope,
                        "state": t.PENDING,
                        "created_at": now,
                    }
                    for peer, envelope in outbox
                ],
            )

    def _append_txn(
        self,
        connection: Connection,
        entry: NewEntry,
        received_from: str | None,
        now: datetime,
    ) -> int:
        result = connection.execute(
            _INSERT_LOG,
            {
                "origin": entry.origin,
                "message_id": entry.message_id,
                "kind": entry.kind,
                "subject_id": entry.subject_id,
                "subject_version": entry.subject_version,
                "ref": entry.ref,
                "envelope": entry.envelope,
                "content_sha256": entry.content_sha256,
                "received_from": received_from,
                "stored_at": now,
            },
        )
        key = result.inserted_primary_key
        assert key is not None, "a single-row INSERT reports its primary key"
        return int(key[0])

    # --- receiving ----------------------------------------------------------

    def append_received(
        self,
        entries: Sequence[NewEntry],
        sender: str,
        now: datetime,
        apply: ApplyHook | None = None,
        check: CheckHook | None = None,
    ) -> list[Received]:
        """Store received messages in one transaction, keyed on (origin, id).

        Records change by new versions, never by edits, so only a version
        newer than every one held is stored. A message already held with the
        same content is a duplicate; the same message id or subject version
        with other content is a conflict; an older version, or anything after
        a retraction, is stale. None of those is stored. ``check`` runs in
        the same transaction for each message about to be stored, and a
        reason it gives refuses the message (a request move this node's
        copy of the request does not allow, say). ``apply`` runs in the
        same transaction for each newly stored message.
        """
        results: list[Received] = []
        with self.write() as connection:
            for entry in entries:
                result = self._classify_txn(connection, entry)
                if result.outcome is ReceiveOutcome.ACCEPTED and check is not None:
                    refused = check(connection, entry)
                    if refused is not None:
                        result = Received(ReceiveOutcome.REFUSED, refused)
                if result.outcome is ReceiveOutcome.ACCEPTED:
                    seq = self._append_txn(connection, entry, sender, now)
                    if apply is not None:
                        apply(connection, seq, entry)
                results.append(result)
        return results

    def _classify_txn(self, connection: Connection, entry: NewEntry) -> Received:
        """Whether ``entry`` may be stored, judged against what is held."""
        same_id = connection.execute(
            _HELD_BY_ID, {"origin": entry.origin, "message_id": entry.message_id}
        ).scalar_one_or_none()
        if same_id is not None:
            if same_id == entry.content_sha256:
                return Received(ReceiveOutcome.DUPLICATE)
            return Received(
                ReceiveOutcome.CONFLICT,
                f"message {entry.message_id} is already held with other content",
            )

        same_version = connection.execute(
            _HELD_BY_VERSION,
            {"subject_id": entry.subject_id, "subject_version": entry.subject_version},
        ).scalar_one_or_none()
        if same_version is not None:
            if same_version == entry.content_sha256:
                return Received(ReceiveOutcome.DUPLICATE)
            return Received(
                ReceiveOutcome.CONFLICT,
                f"version {entry.subject_version} of {entry.subject_id} is already "
                "held with other content",
            )

        newest = connection.execute(
            _NEWEST_VERSION, {"subject_id": entry.subject_id}
        ).first()
        if newest is None:
            return Received(ReceiveOutcome.ACCEPTED)
        if entry.subject_version < newest.subject_version:
            held = newest.subject_version
            return Received(
                ReceiveOutcome.STALE,
                f"stale version {entry.subject_version}, holding {held}",
            )
        if newest.kind == "retraction":
            # A retracted subject stays retracted, whatever comes after.
            return Received(
                ReceiveOutcome.STALE,
                f"version {entry.subject_version} comes after the retraction of "
                f"{entry.subject_id} at version {newest.subject_version}",
            )
        return Received(ReceiveOutcome.ACCEPTED)

    def record_refusals(self, refusals: Sequence[Refusal]) -> None:
        if not refusals:
            return
        with self.write() as connection:
            connection.execute(
                insert(t.refusals),
                [
                    {
                        "at": r.at,
                        "sender": r.sender,
                        "origin": r.origin,
                        "message_id": r.message_id,
                        "kind": r.kind,
                        "outcome": r.outcome,
                        "reason": r.reason,
                        **_stamp_columns(r.agreement),
                    }
                    for r in refusals
                ],
            )

    def refusals(self, limit: int = 100) -> list[Refusal]:
        with self.read() as connection:
            rows = connection.execute(
                select(t.refusals).order_by(t.refusals.c.id.desc()).limit(limit)
            ).all()
        return [
            Refusal(
                at=r.at,
                sender=r.sender,
                origin=r.origin,
                message_id=r.message_id,
                kind=r.kind,
                outcome=r.outcome,
                reason=r.reason,
                agreement=_stamp(r),
            )
            for r in rows
        ]

    # --- reading the log ----------------------------------------------------

    def received(self, after_seq: int, limit: int) -> list[LogEntry]:
        """Messages received from peers, in log order, after ``after_seq``."""
        query = (
            select(t.log)
            .where(t.log.c.received_from.is_not(None), t.log.c.seq > after_seq)
            .order_by(t.log.c.seq)
            .limit(limit)
        )
        with self.read() as connection:
            return [_entry(row) for row in connection.execute(query)]

    def latest(self, subject_id: str) -> LogEntry | None:
        """The newest version of a subject held here."""
        with self.read() as connection:
            row = connection.execute(_LATEST, {"subject_id": subject_id}).first()
        return _entry(row) if row else None

    def latest_version(self, subject_id: str) -> int:
        with self.read() as connection:
            value = connection.execute(
                select(func.max(t.log.c.subject_version)).where(
                    t.log.c.subject_id == subject_id
                )
            ).scalar()
        return int(value or 0)

    def versions(self, subject_id: str) -> list[LogEntry]:
        """Every version of a subject held here, oldest first."""
        query = (
            select(t.log)
            .where(t.log.c.subject_id == subject_id)
            .order_by(t.log.c.subject_version, t.log.c.seq)
        )
        with self.read() as connection:
            return [_entry(row) for row in connection.execute(query)]

    def decisions_for(self, seq: int) -> list[DecisionRow]:
        query = (
            select(t.decisions, t.outbox.c.state)
            .select_from(
                t.decisions.outerjoin(
                    t.outbox,
                    (t.outbox.c.log_seq == t.decisions.c.log_seq)
                    & (t.outbox.c.peer == t.decisions.c.receiver),
                )
            )
            .where(t.decisions.c.log_seq == seq)
            .order_by(t.decisions.c.receiver)
        )
        with self.read() as connection:
            return [
                DecisionRow(
                    receiver=r.receiver,
                    allowed=r.allowed,
                    agreement_id=r.agreement_id,
                    agreement_version=r.agreement_version,
                    rule=r.rule,
                    reason=r.reason,
                    withheld_fields=t.field_names(r.withheld_fields),
                    delivery_state=r.state,
                )
                for r in connection.execute(query)
            ]

    # --- the outbox ---------------------------------------------------------

    def pending_for(self, peer: str, limit: int) -> list[OutboxItem]:
        """The oldest undelivered messages for ``peer``, in order."""
        query = (
            select(t.outbox.c.id, t.outbox.c.envelope)
            .where(t.outbox.c.peer == peer, t.outbox.c.state == t.PENDING)
            .order_by(t.outbox.c.id)
            .limit(limit)
        )
        with self.read() as connection:
            return [
                OutboxItem(id=r.id, envelope=r.envelope)
                for r in connection.execute(query)
            ]

    def settle(
        self,
        peer: str,
        settled: Sequence[tuple[int, str, str]],
        now: datetime,
        answers: Mapping[int, PeerAnswer] | None = None,
    ) -> None:
        """Mark outbox rows (id, state, outcome) and end the peer's backoff; one txn.

        ``answers``, by outbox id: what the peer said of its copy of the
        agreement, kept on the row for ``node.mismatches``.
        """
        answers = answers or {}
        rows = [
            {
                "row_id": outbox_id,
                "row_peer": peer,
                "state": state,
                "settled_at": now,
                "outcome": outcome,
                **_answer_columns(answers.get(outbox_id)),
            }
            for outbox_id, state, outcome in settled
        ]
        with self.write() as connection:
            if rows:
                connection.execute(_SETTLE_OUTBOX, rows)
            self._save_backoff_txn(connection, PeerBackoff(peer, 0, None, None))

    def backoff(self, peer: str) -> PeerBackoff:
        with self.read() as connection:
            row = connection.execute(
                select(t.peer_state).where(t.peer_state.c.peer == peer)
            ).first()
        if row is None:
            return PeerBackoff(peer, 0, None, None)
        return PeerBackoff(
            peer, row.failed_attempts, row.next_attempt_at, row.last_error
        )

    def save_backoff(self, backoff: PeerBackoff) -> None:
        with self.write() as connection:
            self._save_backoff_txn(connection, backoff)

    def _save_backoff_txn(self, connection: Connection, backoff: PeerBackoff) -> None:
        values = {
            "failed_attempts": backoff.failed_attempts,
            "next_attempt_at": backoff.next_attempt_at,
            "last_error": backoff.last_error,
        }
        changed = connection.execute(
            update(t.peer_state)
            .where(t.peer_state.c.peer == backoff.peer)
            .values(**values)
        ).rowcount
        if not changed:
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(t.peer_state).values(peer=backoff.peer, **values)
                    )
            except IntegrityError:
                connection.execute(
                    update(t.peer_state)
                    .where(t.peer_state.c.peer == backoff.peer)
                    .values(**values)
                )

    # --- status -------------------------------------------------------------

    def peer_counts(self) -> list[PeerCounts]:
        query = select(t.outbox.c.peer, t.outbox.c.state, func.count()).group_by(
            t.outbox.c.peer, t.outbox.c.state
        )
        counts: dict[str, dict[str, int]] = {}
        with self.read() as connection:
            for peer, state, number in connection.execute(query):
                counts.setdefault(peer, {})[state] = int(number)
        return [
            PeerCounts(
                peer=peer,
                pending=by_state.get(t.PENDING, 0),
                delivered=by_state.get(t.DELIVERED, 0),
                dead_letters=by_state.get(t.DEAD_LETTER, 0),
            )
            for peer, by_state in sorted(counts.items())
        ]

    def log_counts(self) -> tuple[int, int, int]:
        """(published here, received from peers, refused)."""
        with self.read() as connection:
            published = connection.execute(
                select(func.count())
                .select_from(t.log)
                .where(t.log.c.received_from.is_(None))
            ).scalar_one()
            received = connection.execute(
                select(func.count())
                .select_from(t.log)
                .where(t.log.c.received_from.is_not(None))
            ).scalar_one()
            refused = connection.execute(
                select(func.count()).select_from(t.refusals)
            ).scalar_one()
        return int(published), int(received), int(refused)


def _stamp_columns(stamp: AgreementStamp | None) -> dict[str, object]:
    if stamp is None:
        # Every row of one insert names the same columns.
        return dict.fromkeys(
            ("agreement_id", "agreement_version", "own_agreement_version")
        )
    return {
        "agreement_id": stamp.agreement_id,
        "agreement_version": stamp.sent_version,
        "own_agreement_version": stamp.own_version,
    }


def _stamp(row) -> AgreementStamp | None:
    if row.agreement_id is None:
        return None
    return AgreementStamp(
        row.agreement_id, row.agreement_version or 0, row.own_agreement_version or 0
    )


def _answer_columns(answer: PeerAnswer | None) -> dict[str, object]:
    if answer is None:
        return {
            "peer_agreement_id": None,
            "peer_agreement_version": None,
            "withheld_by_peer": None,
        }
    return {
        "peer_agreement_id": answer.agreement_id,
        "peer_agreement_version": answer.agreement_version,
        "withheld_by_peer": ",".join(answer.withheld_fields),
    }


def _entry(row) -> LogEntry:
    return LogEntry(
        seq=row.seq,
        origin=row.origin,
        message_id=row.message_id,
        kind=row.kind,
        subject_id=row.subject_id,
        subject_version=row.subject_version,
        ref=row.ref,
        envelope=row.envelope,
        received_from=row.received_from,
        stored_at=row.stored_at,
    )


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)

    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
