"""Admin queries on both databases: re-queueing a peer, reading what was
published, and opening a node's database read-only from a tool."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError

from node.storage import Store, content_digest
from node.storage import schema as t
from node.storage.admin import (
    ReadOnlyDatabase,
    latest,
    published_latest,
    recent_answered,
    recent_received,
    recent_refused,
    recent_sent,
    requeue_peer,
)
from node.storage.schema import DEAD_LETTER, DELIVERED, PENDING
from node.storage.types import (
    AgreementStamp,
    NewEntry,
    PeerAnswer,
    PeerBackoff,
    Refusal,
)

NOW = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)


def entry(ref: str, version: int = 1, origin: str = "CN-HB") -> NewEntry:
    subject = f"{origin}/{ref}"
    payload = f"{ref}-{version}".encode()
    return NewEntry(
        origin=origin,
        message_id=f"{ref}-v{version}",
        kind="incident",
        subject_id=subject,
        subject_version=version,
        ref=ref,
        envelope=b"envelope:" + payload,
        content_sha256=content_digest(payload, "incident", subject, version),
    )


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


def publish(store: Store, ref: str, peers: tuple[str, ...], version: int = 1) -> None:
    hops = [(peer, f"{ref}-v{version}->{peer}".encode()) for peer in peers]
    store.append_published(entry(ref, version), [], hops, NOW)


def test_requeue_sets_delivered_and_dead_rows_back_to_pending_in_order(store):
    for ref in ("A", "B", "C", "D"):
        publish(store, ref, ("CN-HN", "CN-JX"))
    [a, b, c, _] = store.pending_for("CN-HN", 10)
    store.settle(
        "CN-HN", [(a.id, DELIVERED, "ACCEPTED"), (c.id, DEAD_LETTER, "x")], NOW
    )
    store.settle("CN-HN", [(b.id, DELIVERED, "ACCEPTED")], NOW)
    jx = store.pending_for("CN-JX", 10)
    store.settle("CN-JX", [(row.id, DELIVERED, "ACCEPTED") for row in jx], NOW)

    assert requeue_peer(store, "CN-HN") == 3

    pending = store.pending_for("CN-HN", 10)
    assert [row.envelope for row in pending] == [
        f"{ref}-v1->CN-HN".encode() for ref in ("A", "B", "C", "D")
    ]
    # Another peer's rows stay as they were.
    assert store.pending_for("CN-JX", 10) == []
    counts = {c.peer: c for c in store.peer_counts()}
    assert (counts["CN-HN"].pending, counts["CN-HN"].delivered) == (4, 0)
    assert counts["CN-HN"].dead_letters == 0
    assert counts["CN-JX"].delivered == 4


def test_requeue_ends_the_peers_backoff(store):
    publish(store, "A", ("CN-HN",))
    later = NOW + timedelta(minutes=5)
    store.save_backoff(PeerBackoff("CN-HN", 7, later, "UNAVAILABLE"))
    store.save_backoff(PeerBackoff("CN-JX", 2, later, "UNAVAILABLE"))

    assert requeue_peer(store, "CN-HN") == 0

    assert store.backoff("CN-HN") == PeerBackoff("CN-HN", 0, None, None)
    assert store.backoff("CN-JX").failed_attempts == 2


def test_published_latest_holds_the_newest_version_of_what_was_published_here(store):
    publish(store, "A", ())
    publish(store, "B", ())
    publish(store, "A", (), version=2)
    store.append_received([entry("X", origin="CN-HN")], "CN-HN", NOW)

    newest = published_latest(store)

    assert [(e.ref, e.subject_version) for e in newest] == [("B", 1), ("A", 2)]
    assert latest(store, "CN-HB/A").subject_version == 2
    assert latest(store, "CN-HN/X").received_from == "CN-HN"
    assert latest(store, "CN-HB/NOPE") is None
    assert [r.sender for r in recent_received(store)] == ["CN-HN"]


def test_recent_sent_reads_rows_in_one_state_newest_first(store):
    for ref in ("A", "B"):
        publish(store, ref, ("CN-HN",))
    ids = [row.id for row in store.pending_for("CN-HN", 10)]
    store.settle(
        "CN-HN", [(i, DEAD_LETTER, "REFUSED_BY_AGREEMENT: no") for i in ids], NOW
    )

    rows = recent_sent(store, DEAD_LETTER)

    assert [row.envelope for row in rows] == [b"B-v1->CN-HN", b"A-v1->CN-HN"]
    assert rows[0].outcome == "REFUSED_BY_AGREEMENT: no"
    assert rows[0].settled_at == NOW
    assert recent_sent(store, PENDING) == []


def test_peer_answers_are_kept_on_the_row_and_cleared_by_a_requeue(store):
    for ref in ("A", "B", "C"):
        publish(store, ref, ("CN-HN",))
    a, b, c = (row.id for row in store.pending_for("CN-HN", 10))
    answers = {
        a: PeerAnswer("central-china", 2, ("incident.entities",)),
        b: PeerAnswer("central-china", 2),
    }
    settled = [
        (a, DELIVERED, "ACCEPTED"),
        (b, DEAD_LETTER, "REFUSED_BY_AGREEMENT: no"),
        (c, DELIVERED, "ACCEPTED"),
    ]
    store.settle("CN-HN", settled, NOW, answers)

    # Newest first; the row answered without a word of the agreement is not
    # among them.
    rows = recent_answered(store)
    assert [(r.state, r.peer_agreement_version, r.withheld_by_peer) for r in rows] == [
        (DEAD_LETTER, 2, ()),
        (DELIVERED, 2, ("incident.entities",)),
    ]
    assert {r.peer_agreement_id for r in rows} == {"central-china"}

    requeue_peer(store, "CN-HN")
    assert recent_answered(store) == []


def test_refusals_keep_the_envelopes_stamp_and_our_version(store):
    stamp = AgreementStamp("central-china", 1, 2)
    refusals = [
        Refusal(NOW, "CN-HB", "CN-HB", "m1", "incident", "refused_by_agreement", "no"),
        Refusal(
            NOW, "CN-HB", "CN-HB", "m2", "incident", "refused_by_agreement", "no", stamp
        ),
    ]
    store.record_refusals(refusals)

    assert [r.agreement for r in store.refusals()] == [stamp, None]
    [refused] = recent_refused(store)
    assert (refused.sender, refused.agreement_id, refused.agreement_version) == (
        "CN-HB",
        "central-china",
        1,
    )


def test_read_only_database_reads_but_cannot_write(store, database_url):
    publish(store, "A", ("CN-HN",))
    database = ReadOnlyDatabase(database_url)
    try:
        assert [e.ref for e in published_latest(database)] == ["A"]
        with pytest.raises(DBAPIError), database.read() as connection:
            connection.execute(
                insert(t.peer_state).values(peer="CN-HN", failed_attempts=1)
            )
            connection.commit()
        if not store.is_sqlite:
            with database.read() as connection:
                mode = connection.execute(text("SHOW transaction_read_only")).scalar()
            assert mode == "on"
    finally:
        database.close()
    assert store.backoff("CN-HN").failed_attempts == 0
