"""The store on both databases: SQLite files and the PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from node.storage import Store, content_digest
from node.storage.schema import DEAD_LETTER, DELIVERED
from node.storage.types import DecisionRow, NewEntry, PeerBackoff, ReceiveOutcome

NOW = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)


def entry(
    ref: str,
    version: int = 1,
    origin: str = "CN-HB",
    payload: bytes = b"x",
    kind: str = "incident",
    message_id: str | None = None,
) -> NewEntry:
    subject = f"{origin}/{ref}"
    return NewEntry(
        origin=origin,
        message_id=message_id or f"{ref}-v{version}",
        kind=kind,
        subject_id=subject,
        subject_version=version,
        ref=ref,
        envelope=b"envelope:" + payload,
        content_sha256=content_digest(payload, kind, subject, version),
    )


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


def test_migrating_twice_changes_nothing(store):
    store.migrate()
    assert store.log_counts() == (0, 0, 0)


def test_agreement_stamps_migration_goes_down_and_up_again(store):
    def columns(table: str) -> set[str]:
        return {c["name"] for c in inspect(store.engine).get_columns(table)}

    config = AlembicConfig()
    migrations = resources.files("node.storage") / "migrations"
    config.set_main_option("script_location", str(migrations))
    with store.write() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    assert "peer_agreement_version" not in columns("outbox")
    assert "own_agreement_version" not in columns("refusals")

    store.migrate()
    assert {"peer_agreement_id", "peer_agreement_version", "withheld_by_peer"} <= (
        columns("outbox")
    )
    assert {"agreement_id", "agreement_version", "own_agreement_version"} <= (
        columns("refusals")
    )


def test_published_record_its_decisions_and_outbox_commit_together(store):
    decision = DecisionRow("CN-HN", True, "central-china", 1, "incidents", "allowed")
    seq = store.append_published(entry("A"), [decision], [("CN-HN", b"hop")], NOW)

    assert store.latest("CN-HB/A").seq == seq
    assert [i.envelope for i in store.pending_for("CN-HN", 10)] == [b"hop"]
    [row] = store.decisions_for(seq)
    assert (row.receiver, row.allowed, row.delivery_state) == ("CN-HN", True, "PENDING")


def test_failed_publish_leaves_nothing_behind(store):
    store.append_published(entry("A"), [], [], NOW)
    with pytest.raises(IntegrityError):
        # Same subject version again: the log's unique constraint refuses it.
        store.append_published(entry("A"), [], [("CN-HN", b"hop")], NOW)
    assert store.pending_for("CN-HN", 10) == []
    assert store.log_counts() == (1, 0, 0)


def test_outbox_is_taken_in_order_and_settled_rows_leave_it(store):
    for i in range(5):
        store.append_published(entry(f"R{i}"), [], [("CN-HN", f"hop{i}".encode())], NOW)
    first = store.pending_for("CN-HN", 3)
    assert [i.envelope for i in first] == [b"hop0", b"hop1", b"hop2"]

    store.settle(
        "CN-HN",
        [(first[0].id, DELIVERED, "ACCEPTED"), (first[1].id, DEAD_LETTER, "no")],
        NOW,
    )
    assert [i.envelope for i in store.pending_for("CN-HN", 10)] == [
        b"hop2",
        b"hop3",
        b"hop4",
    ]
    [counts] = store.peer_counts()
    assert (counts.pending, counts.delivered, counts.dead_letters) == (3, 1, 1)


def outcomes(results):
    return [result.outcome for result in results]


def test_received_message_is_stored_once_and_a_changed_copy_is_a_conflict(store):
    first = store.append_received([entry("A", origin="CN-HN")], "CN-HN", NOW)
    again = store.append_received([entry("A", origin="CN-HN")], "CN-HN", NOW)
    changed = store.append_received(
        [entry("A", origin="CN-HN", payload=b"y")], "CN-HN", NOW
    )

    assert outcomes(first) == [ReceiveOutcome.ACCEPTED]
    assert outcomes(again) == [ReceiveOutcome.DUPLICATE]
    assert outcomes(changed) == [ReceiveOutcome.CONFLICT]
    [held] = store.received(0, 10)
    assert held.envelope == b"envelope:x" and held.received_from == "CN-HN"


def test_version_older_than_the_newest_held_is_stale_and_not_stored(store):
    store.append_received([entry("A", 3, origin="CN-HN")], "CN-HN", NOW)

    [late] = store.append_received([entry("A", 2, origin="CN-HN")], "CN-HN", NOW)

    assert late.outcome is ReceiveOutcome.STALE
    assert late.reason == "stale version 2, holding 3"
    assert [e.subject_version for e in store.versions("CN-HN/A")] == [3]


def test_held_version_under_another_message_id_is_a_duplicate_or_a_conflict(store):
    store.append_received([entry("A", origin="CN-HN")], "CN-HN", NOW)
    same = entry("A", origin="CN-HN", message_id="other-id")
    other = entry("A", origin="CN-HN", payload=b"y", message_id="third-id")

    [duplicate] = store.append_received([same], "CN-HN", NOW)
    [conflict] = store.append_received([other], "CN-HN", NOW)

    assert duplicate.outcome is ReceiveOutcome.DUPLICATE
    assert conflict.outcome is ReceiveOutcome.CONFLICT
    assert conflict.reason == "version 1 of CN-HN/A is already held with other content"
    assert len(store.versions("CN-HN/A")) == 1


def test_nothing_newer_is_stored_after_a_retraction(store):
    retraction = entry("A", 2, origin="CN-HN", kind="retraction")
    store.append_received([entry("A", 1, origin="CN-HN"), retraction], "CN-HN", NOW)

    [after] = store.append_received([entry("A", 3, origin="CN-HN")], "CN-HN", NOW)

    assert after.outcome is ReceiveOutcome.STALE
    assert "after the retraction of CN-HN/A at version 2" in after.reason
    assert [e.kind for e in store.versions("CN-HN/A")] == ["incident", "retraction"]


def test_backoff_survives_a_new_store_on_the_same_database(store, database_url):
    retry_at = NOW + timedelta(seconds=40)
    store.save_backoff(PeerBackoff("CN-HN", 3, retry_at, "UNAVAILABLE: down"))

    reopened = Store(database_url)
    try:
        backoff = reopened.backoff("CN-HN")
    finally:
        reopened.close()
    assert backoff == PeerBackoff("CN-HN", 3, retry_at, "UNAVAILABLE: down")
    assert backoff.next_attempt_at.tzinfo is not None


def test_settling_ends_the_backoff(store):
    store.append_published(entry("A"), [], [("CN-HN", b"hop")], NOW)
    store.save_backoff(PeerBackoff("CN-HN", 2, NOW, "x"))
    [item] = store.pending_for("CN-HN", 1)
    store.settle("CN-HN", [(item.id, DELIVERED, "ACCEPTED")], NOW)
    assert store.backoff("CN-HN").failed_attempts == 0


def test_times_come_back_in_utc_whatever_zone_went_in(store):
    shanghai = NOW.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    store.save_backoff(PeerBackoff("CN-HN", 1, shanghai, None))
    assert store.backoff("CN-HN").next_attempt_at == NOW
    assert store.backoff("CN-HN").next_attempt_at.utcoffset() == timedelta(0)
