"""One peer's sender against a peer that is down, with a fake clock."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from gateway.delivery.sender import PeerSender, StepKind
from gateway.identity import TlsFiles, secure_channel
from node.clock import FakeClock
from node.config import DeliveryConfig
from node.storage import Store
from tests.node.storage.test_store import NOW, entry

CONFIG = DeliveryConfig(initial_backoff_ms=1000, max_backoff_s=4, quick_retries=2, quick_retry_wait_ms=0)


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
        return secure_channel(address, TlsFiles.for_node(certs, "CN-HB"), expected_node_id=peer)

    return PeerSender(
        "CN-HN", store, lambda peer: "127.0.0.1:1", channel, CONFIG, clock,
        rand=lambda: 1.0, sleep=lambda seconds: None,
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
