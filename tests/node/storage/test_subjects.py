"""The subjects view and who holds a subject, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from node.storage import Store
from node.storage.schema import DEAD_LETTER, DELIVERED
from node.storage.subjects import Holder, Subjects, VersionApplied, apply_version_txn
from node.storage.types import DecisionRow
from tests.node.storage.test_store import entry

NOW = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


def allowed(
    receiver: str, agreement: str, withheld: tuple[str, ...] = ()
) -> DecisionRow:
    return DecisionRow(
        receiver, True, agreement, 1, f"{agreement}/incidents", "ok", withheld
    )


def test_holders_are_read_from_delivered_and_pending_rows_newest_version_each(store):
    store.append_published(
        entry("A", 1),
        [allowed("CN-HN", "central-china"), allowed("CN-JX", "central-china")],
        [("CN-HN", b"v1"), ("CN-JX", b"v1")],
        NOW,
    )
    store.append_published(
        entry("A", 2),
        [allowed("CN-HN", "central-china"), allowed("CN", "national-reporting")],
        [("CN-HN", b"v2"), ("CN", b"v2")],
        NOW,
    )
    # CN-JX refused version 1: a dead letter is not holding.
    [jx_row] = store.pending_for("CN-JX", 10)
    store.settle("CN-JX", [(jx_row.id, DEAD_LETTER, "REFUSED_BY_AGREEMENT: no")], NOW)
    [hn_v1, _] = store.pending_for("CN-HN", 10)
    store.settle("CN-HN", [(hn_v1.id, DELIVERED, "ACCEPTED")], NOW)

    holders = Subjects(store).holders("CN-HB/A")

    assert holders == [
        Holder("CN", 2, "national-reporting", 1, (), "PENDING"),
        Holder("CN-HN", 2, "central-china", 1, (), "PENDING"),
    ]


def test_holders_before_a_version_count_only_older_versions(store):
    store.append_published(
        entry("A", 1), [allowed("CN-HN", "central-china")], [("CN-HN", b"v1")], NOW
    )
    store.append_published(
        entry("A", 2),
        [allowed("CN-HN", "central-china"), allowed("CN", "national-reporting")],
        [("CN-HN", b"v2"), ("CN", b"v2")],
        NOW,
    )
    subjects = Subjects(store)
    assert subjects.holders("CN-HB/A", before=2) == [
        Holder("CN-HN", 1, "central-china", 1, (), "PENDING")
    ]
    assert subjects.holders("CN-HB/A", before=1) == []
    assert [h.node for h in subjects.holders("CN-HB/A", before=3)] == ["CN", "CN-HN"]


def test_holders_keep_the_fields_withheld_on_the_earlier_hop(store):
    store.append_published(
        entry("A", 1, origin="CN-SH"),
        [allowed("CN-JS", "yangtze-delta", ("incident.entities",))],
        [("CN-JS", b"v1")],
        NOW,
    )
    [holder] = Subjects(store).holders("CN-SH/A")
    assert holder.withheld_fields == ("incident.entities",)


def test_received_copies_are_not_holders(store):
    store.append_received([entry("A", origin="CN-HN")], "CN-HN", NOW)
    assert Subjects(store).holders("CN-HN/A") == []


def test_subject_view_keeps_its_kind_and_newest_version_and_stays_retracted(store):
    def applied(version: int, kind: str, reason: str = "") -> VersionApplied:
        return VersionApplied(
            subject_id="CN-HN/A",
            origin="CN-HN",
            ref="A",
            kind=kind,
            version=version,
            seq=seq[version],
            received_from="CN-HN",
            created_at=NOW,
            category="rumor" if kind == "incident" else None,
            retraction_reason=reason,
        )

    seq = {}
    for version, kind in ((1, "incident"), (2, "incident"), (3, "retraction")):
        seq[version] = store.append_published(
            entry("A", version, "CN-HN", kind=kind), [], [], NOW
        )
    with store.write() as connection:
        apply_version_txn(connection, applied(2, "incident"))
        apply_version_txn(connection, applied(1, "incident"))  # older: changes nothing
        apply_version_txn(connection, applied(3, "retraction", "不实"))

    state = Subjects(store).state("CN-HN/A")

    assert (state.kind, state.category, state.latest_version) == (
        "incident",
        "rumor",
        3,
    )
    assert (state.retracted, state.retracted_version, state.retraction_reason) == (
        True,
        3,
        "不实",
    )
