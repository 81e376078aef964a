"""Queries for a node's operators: re-queue a peer, read what the admin API
and the offline ``guantong policy diff --config`` report on.

Writes go through the Store's ``write()`` (its one writer lock); reads take
anything with a ``read()`` that yields a Connection: the running node's
Store, or a :class:`ReadOnlyDatabase` opened by a command-line tool beside a
node that may be running. Rows never leave this module; callers get the
plain objects of ``node.storage.types`` or the small ones below.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, func, make_url, select, update

from node.errors import GuantongError
from node.storage import schema as t
from node.storage.store import Store
from node.storage.types import LogEntry

# Status reads look at this many of the newest rows, so a node with a long
# history answers quickly.
RECENT_ROWS = 1000


class Reader(Protocol):
    def read(self) -> AbstractContextManager[Connection]: ...


@dataclass(frozen=True)
class SentStamp:
    """One outbox row: to whom, the envelope as sent, and how it ended."""

    peer: str
    envelope: bytes
    state: str
    outcome: str | None
    settled_at: datetime | None


@dataclass(frozen=True)
class AnsweredStamp:
    """One outbox row the peer answered about its copy of the agreement."""

    peer: str
    state: str
    peer_agreement_id: str
    peer_agreement_version: int
    withheld_by_peer: tuple[str, ...]
    settled_at: datetime | None


@dataclass(frozen=True)
class RefusedStamp:
    """One message refused here that named an agreement."""

    sender: str
    outcome: str
    agreement_id: str
    agreement_version: int
    at: datetime


@dataclass(frozen=True)
class ReceivedStamp:
    """One received message's envelope, with who delivered it and when."""

    sender: str
    envelope: bytes
    stored_at: datetime


# --- re-queueing ---------------------------------------------------------------


def requeue_peer(store: Store, peer: str) -> int:
    """Set every delivered or dead-lettered row for ``peer`` back to pending.

    The sender takes pending rows in id order, so the peer gets everything
    again in the order it was first queued, as the same bytes. The peer's
    backoff is cleared too: whoever asks for a resend says the peer is back.
    Returns how many rows were re-queued.
    """
    with store.write() as connection:
        requeued = connection.execute(
            update(t.outbox)
            .where(
                t.outbox.c.peer == peer,
                t.outbox.c.state.in_((t.DELIVERED, t.DEAD_LETTER)),
            )
            .values(
                state=t.PENDING,
                settled_at=None,
                outcome=None,
                peer_agreement_id=None,
                peer_agreement_version=None,
                withheld_by_peer=None,
            )
        ).rowcount
        connection.execute(
            update(t.peer_state)
            .where(t.peer_state.c.peer == peer)
            .values(failed_attempts=0, next_attempt_at=None, last_error=None)
        )
    return int(requeued)


# --- what was sent and received ------------------------------------------------


def recent_sent(
    reader: Reader, state: str, limit: int = RECENT_ROWS
) -> list[SentStamp]:
    """The newest outbox rows in ``state``, newest first."""
    query = (
        select(
            t.outbox.c.peer,
            t.outbox.c.envelope,
            t.outbox.c.state,
            t.outbox.c.outcome,
            t.outbox.c.settled_at,
        )
        .where(t.outbox.c.state == state)
        .order_by(t.outbox.c.id.desc())
        .limit(limit)
    )
    with reader.read() as connection:
        return [SentStamp(*row) for row in connection.execute(query)]


def recent_received(reader: Reader, limit: int = RECENT_ROWS) -> list[ReceivedStamp]:
    """The newest messages received from peers, newest first."""
    query = (
        select(t.log.c.received_from, t.log.c.envelope, t.log.c.stored_at)
        .where(t.log.c.received_from.is_not(None))
        .order_by(t.log.c.seq.desc())
        .limit(limit)
    )
    with reader.read() as connection:
        return [ReceivedStamp(*row) for row in connection.execute(query)]


def recent_answered(reader: Reader, limit: int = RECENT_ROWS) -> list[AnsweredStamp]:
    """The newest outbox rows a peer answered with its agreement, newest first."""
    query = (
        select(
            t.outbox.c.peer,
            t.outbox.c.state,
            t.outbox.c.peer_agreement_id,
            t.outbox.c.peer_agreement_version,
            t.outbox.c.withheld_by_peer,
            t.outbox.c.settled_at,
        )
        .where(t.outbox.c.peer_agreement_id.is_not(None))
        .order_by(t.outbox.c.id.desc())
        .limit(limit)
    )
    with reader.read() as connection:
        return [
            AnsweredStamp(
                peer=row.peer,
                state=row.state,
                peer_agreement_id=row.peer_agreement_id,
                peer_agreement_version=row.peer_agreement_version or 0,
                withheld_by_peer=t.field_names(row.withheld_by_peer),
                settled_at=row.settled_at,
            )
            for row in connection.execute(query)
        ]


def recent_refused(reader: Reader, limit: int = RECENT_ROWS) -> list[RefusedStamp]:
    """The newest refusals of messages that named an agreement, newest first."""
    query = (
        select(
            t.refusals.c.sender,
            t.refusals.c.outcome,
            t.refusals.c.agreement_id,
            t.refusals.c.agreement_version,
            t.refusals.c.at,
        )
        .where(t.refusals.c.agreement_id.is_not(None))
        .order_by(t.refusals.c.id.desc())
        .limit(limit)
    )
    with reader.read() as connection:
        return [
            RefusedStamp(
                row.sender,
                row.outcome,
                row.agreement_id,
                row.agreement_version or 0,
                row.at,
            )
            for row in connection.execute(query)
        ]


# --- records held ----------------------------------------------------------------


def latest(reader: Reader, subject_id: str) -> LogEntry | None:
    """The newest version of a subject held here."""
    query = (
        select(*_ENTRY_COLUMNS)
        .where(t.log.c.subject_id == subject_id)
        .order_by(t.log.c.subject_version.desc(), t.log.c.seq.desc())
        .limit(1)
    )
    with reader.read() as connection:
        row = connection.execute(query).first()
    return LogEntry(**row._mapping) if row else None


def published_latest(reader: Reader) -> list[LogEntry]:
    """The newest version of every subject published here, in log order."""
    newest = (
        select(t.log.c.subject_id, func.max(t.log.c.subject_version).label("version"))
        .where(t.log.c.received_from.is_(None))
        .group_by(t.log.c.subject_id)
        .subquery()
    )
    query = (
        select(*_ENTRY_COLUMNS)
        .join(
            newest,
            (newest.c.subject_id == t.log.c.subject_id)
            & (newest.c.version == t.log.c.subject_version),
        )
        .where(t.log.c.received_from.is_(None))
        .order_by(t.log.c.seq)
    )
    with reader.read() as connection:
        return [LogEntry(**row._mapping) for row in connection.execute(query)]


_ENTRY_COLUMNS = (
    t.log.c.seq,
    t.log.c.origin,
    t.log.c.message_id,
    t.log.c.kind,
    t.log.c.subject_id,
    t.log.c.subject_version,
    t.log.c.ref,
    t.log.c.envelope,
    t.log.c.received_from,
    t.log.c.stored_at,
)


# --- reading a node's database from outside the node ----------------------------


class ReadOnlyDatabase:
    """A node's database opened for reading only, by a tool beside the node.

    SQLite is opened with ``mode=ro`` (and ``immutable`` when the node is
    stopped, see below), PostgreSQL sessions default to read-only transactions:
    a mistake in the tool cannot change the node's data, and no migration runs.
    """

    def __init__(self, url: str):
        self.url = url
        self.engine = _read_only_engine(url)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def close(self) -> None:
        self.engine.dispose()


def _read_only_engine(url: str) -> Engine:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(
            url, connect_args={"options": "-c default_transaction_read_only=on"}
        )

    path = Path(parsed.database or "")
    if not parsed.database or not path.is_file():
        raise GuantongError(f"no node database at {path}")
    # Reading a WAL database creates its -wal and -shm files when they are
    # missing, owned by whoever runs the tool; a node running as another user
    # could then not open them. They are missing only when no connection is
    # open, i.e. the node is stopped, and then the file cannot change under
    # us: open it as immutable, which creates nothing.
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    uri = f"{path.resolve().as_uri()}?{mode}"
    return create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
    )
