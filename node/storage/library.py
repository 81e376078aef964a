"""The statement library (口径库) and the case library (案例库): upkeep and search.

``statements`` holds the newest version of every response statement this node
holds, its own and those shared with it; ``cases`` holds every incident whose
newest version is closed, with its review. Both are written by appliers in
the transaction of the log row they derive from; the record itself stays in
the log and search results read it from there.

Search is a substring match over a normalised text column (NFKC, then case
folded), with LIKE and escaped wildcards. Chinese has no spaces between
words, and a word segmenter can split 涉事食品安全问题 so that 食品安全 is no
longer one of its words; a substring match has no such failure and is the
same portable SQL on SQLite and on PostgreSQL. White space in a query
separates terms that must all occur.

At scale a substring LIKE scans every row. An index that serves it needs, on
PostgreSQL, the pg_trgm extension and a GIN index on ``search_text`` with
``gin_trgm_ops``; on SQLite, an FTS5 table with the ``trigram`` tokenizer kept
beside ``statements``. Both index three-character grams, so a one- or
two-character term (食品) still scans. Neither is built here: the libraries a
bureau keeps (tens to thousands of statements) scan in milliseconds.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from node.storage import schema as t
from node.storage.store import Store

MAX_RESULTS = 500


def normalise(text: str) -> str:
    """The form both the column and the query are compared in.

    NFKC folds full-width letters, digits and spaces (ＡＢＣ１２３) into
    their ordinary forms; case folding makes Latin text match in any case.
    """
    return unicodedata.normalize("NFKC", text).casefold()


# Longer queries are refused: each term is a LIKE pattern, and SQLite refuses
# patterns past a size; no one types a statement's worth of query.
MAX_QUERY_CHARS = 200
MAX_QUERY_TERMS = 10


def search_terms(text: str) -> list[str]:
    """The normalised terms of a query; white space separates them.

    Raises ValueError for a query too long to be a search.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"at most {MAX_QUERY_CHARS} characters, got {len(text)}")
    terms = normalise(text).split()
    if len(terms) > MAX_QUERY_TERMS:
        raise ValueError(f"at most {MAX_QUERY_TERMS} terms, got {len(terms)}")
    return terms


@dataclass(frozen=True)
class StatementApplied:
    subject_id: str
    origin: str
    ref: str
    version: int
    seq: int
    incident_subject: str | None
    supersedes: str | None
    issued_at: datetime
    received_from: str | None
    search_text: str


@dataclass(frozen=True)
class CaseApplied:
    subject_id: str
    origin: str
    ref: str
    version: int
    seq: int
    closed_at: datetime
    received_from: str | None
    search_text: str


@dataclass(frozen=True)
class Found:
    """One search hit; ``envelope`` is the stored envelope of its version."""

    subject_id: str
    origin: str
    ref: str
    version: int
    envelope: bytes
    category: str | None
    # When the statement was issued, or the incident closed.
    at: datetime
    received_from: str | None
    retracted: bool
    superseded_by: str | None = None


# --- upkeep, inside the log row's transaction --------------------------------


def apply_statement_txn(connection: Connection, applied: StatementApplied) -> None:
    """Keep the newest version of a statement and the supersede marks.

    Gaps (issue 3): a receiver whose agreement withholds
    ``statement.supersedes`` cannot mark the old statement; and retracting
    the statement that superseded another leaves the old one marked.
    """
    held = connection.execute(
        select(t.statements.c.version, t.statements.c.supersedes).where(
            t.statements.c.subject_id == applied.subject_id
        )
    ).first()
    if held is not None and applied.version <= held.version:
        return
    supersedes = (
        applied.supersedes if _same_origin(applied, applied.supersedes) else None
    )

    values = {
        "version": applied.version,
        "log_seq": applied.seq,
        "incident_subject": applied.incident_subject,
        "supersedes": supersedes,
        "issued_at": applied.issued_at,
        "received_from": applied.received_from,
        "search_text": applied.search_text,
    }
    if held is None:
        # A statement that replaces this one may have arrived first.
        replaced_by = connection.execute(
            select(t.statements.c.subject_id)
            .where(t.statements.c.supersedes == applied.subject_id)
            .order_by(t.statements.c.issued_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        connection.execute(
            insert(t.statements).values(
                subject_id=applied.subject_id,
                origin=applied.origin,
                ref=applied.ref,
                superseded_by=replaced_by,
                **values,
            )
        )
    else:
        connection.execute(
            update(t.statements)
            .where(t.statements.c.subject_id == applied.subject_id)
            .values(values)
        )
        if held.supersedes and held.supersedes != supersedes:
            # A newer version no longer replaces what the older one did.
            _mark_superseded_txn(connection, held.supersedes, None, applied.subject_id)

    if supersedes:
        _mark_superseded_txn(connection, supersedes, applied.subject_id, None)


def _same_origin(applied: StatementApplied, other_subject: str | None) -> bool:
    """Only a statement's origin may mark it superseded: a statement that
    claims to replace another node's statement marks nothing."""
    return other_subject is not None and other_subject.startswith(f"{applied.origin}/")


def _mark_superseded_txn(
    connection: Connection, subject_id: str, by: str | None, only_if_by: str | None
) -> None:
    condition = t.statements.c.subject_id == subject_id
    if only_if_by is not None:
        condition = and_(condition, t.statements.c.superseded_by == only_if_by)
    connection.execute(update(t.statements).where(condition).values(superseded_by=by))


def apply_case_txn(connection: Connection, applied: CaseApplied) -> None:
    """A closed incident becomes (or stays) a case at its newest version."""
    held = connection.execute(
        select(t.cases.c.version).where(t.cases.c.subject_id == applied.subject_id)
    ).scalar_one_or_none()
    values = {
        "version": applied.version,
        "log_seq": applied.seq,
        "closed_at": applied.closed_at,
        "received_from": applied.received_from,
        "search_text": applied.search_text,
    }
    if held is None:
        connection.execute(
            insert(t.cases).values(
                subject_id=applied.subject_id,
                origin=applied.origin,
                ref=applied.ref,
                **values,
            )
        )
    elif applied.version > held:
        connection.execute(
            update(t.cases)
            .where(t.cases.c.subject_id == applied.subject_id)
            .values(values)
        )


# Runs for every open incident stored: built once.
_DELETE_CASE = delete(t.cases).where(t.cases.c.subject_id == bindparam("case_subject"))


def reopen_case_txn(connection: Connection, subject_id: str) -> None:
    """An incident whose newest version is open again is no longer a case."""
    connection.execute(_DELETE_CASE, {"case_subject": subject_id})


# --- search -------------------------------------------------------------------


class Library:
    """Searches over the statements and cases this node holds."""

    def __init__(self, store: Store):
        self.store = store

    def search_statements(
        self,
        terms: Sequence[str],
        category: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Found]:
        """Statements containing every term, newest first.

        ``category`` is the topic's for a topic statement, else its incident's
        as of the incident's newest version held here. ``since`` is inclusive,
        ``until`` exclusive.
        """
        own = t.subjects.alias("own")
        incident = t.subjects.alias("incident")
        category_of = func.coalesce(own.c.category, incident.c.category)
        query = (
            select(
                t.statements,
                t.log.c.envelope,
                category_of.label("category"),
                func.coalesce(own.c.retracted, False).label("retracted"),
            )
            .select_from(
                t.statements.join(t.log, t.log.c.seq == t.statements.c.log_seq)
                .outerjoin(own, own.c.subject_id == t.statements.c.subject_id)
                .outerjoin(
                    incident, incident.c.subject_id == t.statements.c.incident_subject
                )
            )
            .where(*_contains_all(t.statements.c.search_text, terms))
            .order_by(t.statements.c.issued_at.desc(), t.statements.c.subject_id)
            .limit(min(limit, MAX_RESULTS))
        )
        if category is not None:
            query = query.where(category_of == category)
        if since is not None:
            query = query.where(t.statements.c.issued_at >= since)
        if until is not None:
            query = query.where(t.statements.c.issued_at < until)
        with self.store.read() as connection:
            return [
                Found(
                    subject_id=row.subject_id,
                    origin=row.origin,
                    ref=row.ref,
                    version=row.version,
                    envelope=row.envelope,
                    category=row.category,
                    at=row.issued_at,
                    received_from=row.received_from,
                    retracted=bool(row.retracted),
                    superseded_by=row.superseded_by,
                )
                for row in connection.execute(query)
            ]

    def search_cases(
        self, terms: Sequence[str], category: str | None = None, limit: int = 100
    ) -> list[Found]:
        """Closed incidents whose title, summary, review or keywords contain
        every term, most recently closed first."""
        own = t.subjects
        query = (
            select(
                t.cases,
                t.log.c.envelope,
                own.c.category,
                func.coalesce(own.c.retracted, False).label("retracted"),
            )
            .select_from(
                t.cases.join(t.log, t.log.c.seq == t.cases.c.log_seq).outerjoin(
                    own, own.c.subject_id == t.cases.c.subject_id
                )
            )
            .where(*_contains_all(t.cases.c.search_text, terms))
            .order_by(t.cases.c.closed_at.desc(), t.cases.c.subject_id)
            .limit(min(limit, MAX_RESULTS))
        )
        if category is not None:
            query = query.where(own.c.category == category)
        with self.store.read() as connection:
            return [
                Found(
                    subject_id=row.subject_id,
                    origin=row.origin,
                    ref=row.ref,
                    version=row.version,
                    envelope=row.envelope,
                    category=row.category,
                    at=row.closed_at,
                    received_from=row.received_from,
                    retracted=bool(row.retracted),
                )
                for row in connection.execute(query)
            ]

    def superseded_by(self, subject_id: str) -> str | None:
        with self.store.read() as connection:
            return connection.execute(
                select(t.statements.c.superseded_by).where(
                    t.statements.c.subject_id == subject_id
                )
            ).scalar_one_or_none()


def _contains_all(column, terms: Sequence[str]) -> list[ColumnElement[bool]]:
    """``column LIKE '%term%'`` for each term, with % and _ in a term escaped."""
    return [column.contains(normalise(term), autoescape=True) for term in terms if term]
