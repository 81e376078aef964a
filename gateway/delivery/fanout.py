"""Fan-out: one sender thread per peer, woken when its outbox grows."""

from __future__ import annotations

import threading
from collections.abc import Collection

import structlog

from gateway.delivery.sender import PeerSender

log = structlog.get_logger(__name__)


class Senders:
    """Starts, wakes and stops the per-peer senders of one node."""

    def __init__(self, senders: Collection[PeerSender]):
        self._senders = {sender.peer: sender for sender in senders}
        self._wake = {peer: threading.Event() for peer in self._senders}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for peer, sender in self._senders.items():
            thread = threading.Thread(
                target=sender.run,
                args=(self._stop, self._wake[peer]),
                name=f"sender-{peer}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def wake(self, peers: Collection[str]) -> None:
        for peer in peers:
            if peer in self._wake:
                self._wake[peer].set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("peer.sender_did_not_stop", thread=thread.name)
        self._threads.clear()
