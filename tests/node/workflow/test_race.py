"""Two moves of one request racing on a real database: only one wins.

Two replicas of CN-HN's node share one database, each with its own engine,
write lock, Publisher and Workflows, as two gateway processes on one
PostgreSQL database would (or two processes on one SQLite file). Both read
the request OPEN and pass the early check; a barrier then lets both publish
at once. The compare-and-set in the publishing transaction lets exactly one
move win; the other fails as a whole and leaves nothing behind.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.delivery.receiver import Outcome, Receiver
from gateway.policy import PolicyHolder
from node.appliers import Appliers
from node.clock import FakeClock
from node.config import WorkflowConfig
from node.envelopes import seal
from node.publishing import Publisher
from node.record_json import record_from_json
from node.records import subject_id
from node.storage import Store
from node.workflow import appliers as workflow_appliers
from node.workflow.requests import Action, Handling, TransitionConflict
from node.workflow.service import Workflows
from tests.conftest import POLICIES
from tests.helpers import incident
from tests.node.workflow.test_deadlines import Requester

NOW = datetime(2025, 7, 1, 8, tzinfo=UTC)
ROUNDS = 5


class Replica:
    def __init__(self, url: str, clock: FakeClock):
        self.store = Store(url)
        self.store.migrate()
        policies = PolicyHolder(POLICIES)
        appliers = Appliers()
        workflow_appliers.register(
            appliers, "CN-HN", workflow_appliers.audience_of(policies, "CN-HN", clock)
        )
        self.publisher = Publisher(
            "CN-HN", self.store, policies, lambda: {"CN-HB"}, clock, appliers=appliers
        )
        self.receiver = Receiver(
            "CN-HN", self.store, policies, clock, appliers=appliers
        )
        self.workflows = Workflows(
            "CN-HN", self.store, self.publisher, policies, clock, WorkflowConfig()
        )


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[Replica, Replica]]:
    clock = FakeClock(NOW)
    pair = (Replica(database_url, clock), Replica(database_url, clock))
    yield pair
    for replica in pair:
        replica.store.close()


def receive_request(replica: Replica, ref: str) -> str:
    """CN-HB's incident and its request to CN-HN, as CN-HN receives them."""
    envelopes = [
        _envelope(incident(ref, level=2)),
        _envelope(
            {
                "ref": f"{ref}-R1",
                "kind": "joint_request",
                "incident_ref": ref,
                "to": "CN-HN",
                "ask": "请协助核查",
                "due_at": "2025-07-01T18:00:00+08:00",
            }
        ),
    ]
    results = replica.receiver.push("CN-HB", envelopes)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 2
    return subject_id("CN-HB", f"{ref}-R1")


def at_the_barrier(replica: Replica, barrier: threading.Barrier) -> None:
    """Hold the replica's publish until the other replica is at its publish too."""
    publish = replica.publisher.publish

    def publish_together(*args, **kwargs):  # type: ignore[no-untyped-def]
        barrier.wait(timeout=10)
        return publish(*args, **kwargs)

    replica.publisher.publish = publish_together  # type: ignore[method-assign]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_of_two_concurrent_moves_only_one_wins(replicas, round_):
    first, second = replicas
    request = receive_request(first, f"HB-RACE-{round_}")
    barrier = threading.Barrier(2)
    at_the_barrier(first, barrier)
    at_the_barrier(second, barrier)

    outcomes: dict[str, object] = {}

    def make(name: str, replica: Replica, action: Action, text: str) -> None:
        try:
            outcomes[name] = replica.workflows.move(request, action, text)
        except TransitionConflict as conflict:
            outcomes[name] = conflict

    threads = [
        threading.Thread(target=make, args=("accept", first, Action.ACCEPT, "")),
        threading.Thread(
            target=make, args=("decline", second, Action.DECLINE, "无管辖权")
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    won = [
        name for name, outcome in outcomes.items() if not isinstance(outcome, Exception)
    ]
    lost = [
        outcome
        for outcome in outcomes.values()
        if isinstance(outcome, TransitionConflict)
    ]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "another move came first" in str(lost[0])

    held = first.workflows.data.request(request)
    expected = Handling.ACCEPTED if won == ["accept"] else Handling.DECLINED
    assert held is not None and held.state.handling is expected and held.moves == 1
    # The loser's update was never stored: its publish failed as a whole.
    published, _, _ = first.store.log_counts()
    assert published == 1


def _envelope(data: dict):  # type: ignore[no-untyped-def]
    ref, record = record_from_json(data, "CN-HB")
    envelope = seal(
        message_id=uuid.uuid4().hex,
        origin="CN-HB",
        author_unit="",
        created_at=NOW,
        subject_id=subject_id("CN-HB", ref),
        subject_version=1,
        ref=ref,
        record=record,
        exercise=False,
    )
    envelope.agreement_id = "central-china"
    envelope.agreement_version = 1
    return envelope


def test_two_replicas_sending_one_escalation_record_send_it_once(database_url):
    clock = FakeClock(NOW)
    first, second = Requester(database_url, clock), Requester(database_url, clock)
    try:
        first.publish(incident("HB-1", level=2))
        first.publish(
            {
                "ref": "HB-1-R1",
                "kind": "joint_request",
                "incident_ref": "HB-1",
                "to": "CN-HN",
                "ask": "请协助核查",
            }
        )
        request = "CN-HB/HB-1-R1"
        # Escalated, but the node stopped before its escalation record went out.
        publish = first.publisher.publish
        first.publisher.publish = lambda ref, record, unit="": (  # type: ignore[method-assign]
            _raise() if record.HasField("escalation") else publish(ref, record, unit)
        )
        first.workflows.move(request, Action.ESCALATE, "提级")
        first.publisher.publish = publish  # type: ignore[method-assign]
        assert first.workflows.data.request(request).escalation_subject is None

        barrier = threading.Barrier(2)
        at_the_barrier(first, barrier)  # type: ignore[arg-type]
        at_the_barrier(second, barrier)  # type: ignore[arg-type]
        sent: list[list[str]] = []
        threads = [
            threading.Thread(
                target=lambda r=replica: sent.append(
                    r.workflows.send_unsent_escalations()
                )
            )
            for replica in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert sorted(sent) == [[], [request]]
        assert len(first.workflows.escalations()) == 1
        row = first.workflows.data.request(request)
        assert row.escalation_subject == first.workflows.escalations()[0].subject_id
    finally:
        first.store.close()
        second.store.close()


def _raise() -> None:
    raise RuntimeError("the node stopped here")
