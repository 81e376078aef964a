"""One peer's sender against a peer that is down, with a fake clock."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import records_pb2 as pb
from structlog.testing import capture_logs

from gateway.delivery.sender import (
    REFUSED_BY_AGREEMENT_KEY,
    REFUSED_BY_AGREEMENT_VALUE,
    RESULTS_KEY,
    PeerSender,
    StepKind,
)
from gateway.identity import TlsFiles, secure_channel
from node.clock import FakeClock
from node.config import DeliveryConfig
from node.storage import Store
from node.storage.admin import recent_answered, recent_sent
from node.storage.schema import DEAD_LETTER, DELIVERED
from tests.node.storage.test_store import NOW, entry

CONFIG = DeliveryConfig(
    initial_backoff_ms=1000, max_backoff_s=4, quick_retries=2, quick_retry_wait_ms=0
)


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'node.db'}")
    store.migrate()
    store.append_published(entry("A"), [], [("CN-HN", b"\n\x01x")], NOW)
    yield store
    store.close()


def make_sender(store, certs, clock, attempts):
    def channel(address: str, peer: str) -> grpc.Channel:
        attempts.append(address)
        # Nothing listens on port 1: every push fails with UNAVAILABLE.
        return secure_channel(
            address, TlsFiles.for_node(certs, "CN-HB"), expected_node_id=peer
        )

    return PeerSender(
        "CN-HN",
        store,
        lambda peer: "127.0.0.1:1",
        channel,
        CONFIG,
        clock,
        rand=lambda: 1.0,
        sleep=lambda seconds: None,
    )


def test_backoff_doubles_up_to_its_ceiling_and_waits_without_pushing(store, certs):
    clock = FakeClock(NOW)
    attempts: list[str] = []
    sender = make_sender(store, certs, clock, attempts)

    delays = []
    for _ in range(4):
        step = sender.step()
        assert step.kind is StepKind.FAILED
        delays.append(step.wait_s)
        # Before the retry time nothing is pushed.
        channels_before = len(attempts)
        assert sender.step().kind is StepKind.BACKING_OFF
        assert len(attempts) == channels_before
        clock.advance(timedelta(seconds=step.wait_s))

    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert store.backoff("CN-HN").failed_attempts == 4
    assert len(store.pending_for("CN-HN", 10)) == 1


def test_restarted_sender_resumes_the_stored_backoff(store, certs):
    clock = FakeClock(NOW)
    make_sender(store, certs, clock, []).step()

    attempts: list[str] = []
    restarted = make_sender(store, certs, clock, attempts)
    step = restarted.step()
    assert step.kind is StepKind.BACKING_OFF and step.wait_s == pytest.approx(1.0)
    assert attempts == []


# --- what the peer answers about its copy of the agreement ------------------


class FakeChannel:
    """A channel whose Push calls ``answer`` with the request."""

    def __init__(self, answer):  # type: ignore[no-untyped-def]
        self.answer = answer

    def unary_unary(self, path, **kwargs):  # type: ignore[no-untyped-def]
        return lambda request, timeout=None: self.answer(request)

    def close(self) -> None:
        pass


class BatchRefused(grpc.RpcError):
    """PERMISSION_DENIED for a whole batch, as a peer's servicer sends it."""

    def __init__(self, details: str, results: bytes):
        self._details = details
        self._trailers = (
            (REFUSED_BY_AGREEMENT_KEY, REFUSED_BY_AGREEMENT_VALUE),
            (RESULTS_KEY, results),
        )

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return self._trailers


def queued(store: Store, *message_ids: str) -> None:
    """One outbox row per id for CN-HN, sent under central-china v1."""
    for message_id in message_ids:
        hop = pb.Envelope(
            message_id=message_id, agreement_id="central-china", agreement_version=1
        )
        store.append_published(
            entry(message_id), [], [("CN-HN", hop.SerializeToString())], NOW
        )


def answering_sender(  # type: ignore[no-untyped-def]
    store: Store, answer
) -> PeerSender:
    return PeerSender(
        "CN-HN",
        store,
        lambda peer: "127.0.0.1:1",
        lambda address, peer: FakeChannel(answer),
        CONFIG,
        FakeClock(NOW),
        sleep=lambda seconds: None,
    )


@pytest.fixture
def empty_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'node.db'}")
    store.migrate()
    yield store
    store.close()


def test_answers_under_another_version_are_kept_and_logged_once_per_batch(
    empty_store,
):
    queued(empty_store, "m1", "m2")

    def accept_under_v2(request: fed.PushRequest) -> fed.PushResponse:
        response = fed.PushResponse()
        for envelope in request.envelopes:
            response.results.add(
                message_id=envelope.message_id,
                outcome=fed.ACCEPTED,
                agreement_id="central-china",
                agreement_version=2,
                withheld_by_receiver=["incident.entities"],
            )
        return response

    with capture_logs() as logs:
        step = answering_sender(empty_store, accept_under_v2).step()

    assert step.kind is StepKind.DELIVERED and step.settled == 2
    [logged] = [e for e in logs if e["event"] == "policy.version_mismatch"]
    assert logged["peer"] == "CN-HN" and logged["agreement"] == "central-china"
    assert (logged["ours"], logged["theirs"], logged["messages"]) == (1, 2, 2)
    assert logged["withheld"] == ["incident.entities"]
    answers = recent_answered(empty_store)
    assert [(a.state, a.peer_agreement_version) for a in answers] == [
        (DELIVERED, 2),
        (DELIVERED, 2),
    ]
    assert answers[0].withheld_by_peer == ("incident.entities",)


def test_a_batch_refused_whole_settles_each_row_on_the_peers_own_result(
    empty_store,
):
    queued(empty_store, "m1", "m2")
    results = fed.PushResponse()
    # The trailer carries m1's result only (the peer ran out of room for m2).
    results.results.add(
        message_id="m1",
        outcome=fed.REFUSED_BY_AGREEMENT,
        reason="central-china v2 does not share level Ⅲ",
        agreement_id="central-china",
        agreement_version=2,
    )

    def refuse(request: fed.PushRequest) -> fed.PushResponse:
        raise BatchRefused("first reason", results.SerializeToString())

    with capture_logs() as logs:
        step = answering_sender(empty_store, refuse).step()

    assert step.kind is StepKind.DELIVERED and step.settled == 2
    dead = recent_sent(empty_store, DEAD_LETTER)
    assert [row.outcome for row in dead] == [
        "REFUSED_BY_AGREEMENT: first reason",
        "REFUSED_BY_AGREEMENT: central-china v2 does not share level Ⅲ",
    ]
    [answer] = recent_answered(empty_store)
    assert (answer.state, answer.peer_agreement_version) == (DEAD_LETTER, 2)
    [logged] = [e for e in logs if e["event"] == "policy.version_mismatch"]
    assert (logged["ours"], logged["theirs"], logged["refused"]) == (1, 2, 1)


def test_a_garbled_results_trailer_settles_on_the_status_alone(empty_store):
    queued(empty_store, "m1")

    def refuse(request: fed.PushRequest) -> fed.PushResponse:
        raise BatchRefused("not from you", b"\xff\xff\xff")

    step = answering_sender(empty_store, refuse).step()

    assert step.kind is StepKind.DELIVERED
    [dead] = recent_sent(empty_store, DEAD_LETTER)
    assert dead.outcome == "REFUSED_BY_AGREEMENT: not from you"
    assert recent_answered(empty_store) == []
