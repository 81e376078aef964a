"""The Local servicer: a bureau's own systems publish and read through it.

Thin by design: convert the proto, call the publisher or the store, convert
back. Status codes are chosen here and only here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import structlog

from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc
from node.errors import InvalidRecord
from node.envelopes import read_stored
from node.publishing import Publisher
from node.records import subject_id, timestamp
from node.storage import Store
from node.storage.types import DecisionRow, LogEntry

log = structlog.get_logger(__name__)

MAX_PAGE = 1000
WATCH_POLL_S = 1.0


class NewMessages:
    """Wakes watch streams when the receiver stores something."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout_s: float) -> int:
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen, timeout_s)
            return self._generation

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation


class LocalService(api_grpc.LocalServicer):
    def __init__(self, node_id: str, store: Store, publisher: Publisher, signal: NewMessages):
        self.node_id = node_id
        self.store = store
        self.publisher = publisher
        self.signal = signal

    def Publish(self, request: api.PublishRequest, context: grpc.ServicerContext) -> api.PublishResponse:
        if not request.HasField("record"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "record: is required")
        try:
            published = self.publisher.publish(request.ref, request.record, request.author_unit)
        except InvalidRecord as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return api.PublishResponse(
            message_id=published.message_id,
            subject_id=published.subject_id,
            subject_version=published.subject_version,
            destinations=[_destination(d) for d in published.decisions],
        )

    def Inbox(self, request: api.InboxRequest, context: grpc.ServicerContext) -> api.InboxResponse:
        entries = self.store.received(request.after_seq, _page(request.limit))
        return api.InboxResponse(messages=[_stored(e) for e in entries])

    def Watch(
        self, request: api.InboxRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StoredMessage]:
        cursor = request.after_seq
        seen = self.signal.generation
        while context.is_active():
            entries = self.store.received(cursor, _page(request.limit))
            for entry in entries:
                yield _stored(entry)
                cursor = entry.seq
            if not entries:
                seen = self.signal.wait(seen, WATCH_POLL_S)

    def Delivery(
        self, request: api.DeliveryRequest, context: grpc.ServicerContext
    ) -> api.DeliveryResponse:
        entry = self.store.latest(subject_id(self.node_id, request.ref))
        if entry is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"ref: {request.ref!r} was not published by {self.node_id}"
            )
        return api.DeliveryResponse(
            subject_id=entry.subject_id,
            subject_version=entry.subject_version,
            destinations=[_destination(d) for d in self.store.decisions_for(entry.seq)],
        )

    def Status(self, request: api.StatusRequest, context: grpc.ServicerContext) -> api.StatusResponse:
        published, received, refused = self.store.log_counts()
        response = api.StatusResponse(
            node=self.node_id, published=published, received=received, refused=refused
        )
        for counts in self.store.peer_counts():
            backoff = self.store.backoff(counts.peer)
            peer = response.peers.add(
                node=counts.peer,
                pending=counts.pending,
                delivered=counts.delivered,
                dead_letters=counts.dead_letters,
                failed_attempts=backoff.failed_attempts,
                last_error=backoff.last_error or "",
            )
            if backoff.next_attempt_at is not None:
                peer.next_attempt_at.CopyFrom(timestamp(backoff.next_attempt_at))
        return response


def _page(limit: int) -> int:
    return min(limit or 100, MAX_PAGE)


def _stored(entry: LogEntry) -> api.StoredMessage:
    opened = read_stored(entry.envelope)
    return api.StoredMessage(
        seq=entry.seq,
        received_from=entry.received_from or "",
        received_at=timestamp(entry.stored_at),
        envelope=opened.envelope,
        record=opened.record,
    )


def _destination(row: DecisionRow) -> api.Destination:
    return api.Destination(
        node=row.receiver,
        allowed=row.allowed,
        agreement_id=row.agreement_id or "",
        agreement_version=row.agreement_version or 0,
        rule=row.rule,
        reason=row.reason,
        withheld_fields=list(row.withheld_fields),
        delivery_state=row.delivery_state or "",
    )
