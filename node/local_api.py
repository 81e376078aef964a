"""The Local servicer: a bureau's own systems publish and read through it.

Thin by design: convert the proto, call the publisher or the store, convert
back. Status codes are chosen here and only here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import NoReturn

import grpc
import structlog
from google.protobuf.message import Message
from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc
from guantong.v1 import records_pb2 as pb

from node.envelopes import read_stored
from node.errors import GuantongError, InvalidRecord
from node.publishing import Published, Publisher
from node.records import CATEGORIES, CATEGORY_CODES, is_node_id, subject_id, timestamp
from node.relay import Relayer
from node.storage import Store
from node.storage.library import Found, Library, search_terms
from node.storage.types import DecisionRow, LogEntry

log = structlog.get_logger(__name__)

MAX_PAGE = 1000
MAX_PAGE_BYTES = 3 * 1024 * 1024
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
    def __init__(
        self,
        node_id: str,
        store: Store,
        publisher: Publisher,
        signal: NewMessages,
        relayer: Relayer,
    ):
        self.relayer = relayer
        self.node_id = node_id
        self.store = store
        self.publisher = publisher
        self.signal = signal
        self.library = Library(store)

    def Publish(
        self, request: api.PublishRequest, context: grpc.ServicerContext
    ) -> api.PublishResponse:
        if not request.HasField("record"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "record: is required")
        publisher, unit = self.publisher, request.author_unit
        return _publishing(
            context, lambda: publisher.publish(request.ref, request.record, unit)
        )

    def Forward(
        self, request: api.ForwardRequest, context: grpc.ServicerContext
    ) -> api.DeliveryResponse:
        try:
            rows = self.relayer.forward(
                request.origin, request.ref, list(request.to_nodes)
            )
        except InvalidRecord as exc:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        entry = self.store.latest(subject_id(request.origin, request.ref))
        assert entry is not None, "forward() refuses a subject not held here"
        return api.DeliveryResponse(
            subject_id=entry.subject_id,
            subject_version=entry.subject_version,
            destinations=[_destination(row) for row in rows],
        )

    def Retract(
        self, request: api.RetractRequest, context: grpc.ServicerContext
    ) -> api.PublishResponse:
        publisher, unit = self.publisher, request.author_unit
        return _publishing(
            context, lambda: publisher.retract(request.ref, request.reason, unit)
        )

    def CloseIncident(
        self, request: api.CloseIncidentRequest, context: grpc.ServicerContext
    ) -> api.PublishResponse:
        publisher, unit = self.publisher, request.author_unit
        return _publishing(
            context, lambda: publisher.close(request.ref, request.review, unit)
        )

    def Show(
        self, request: api.ShowRequest, context: grpc.ServicerContext
    ) -> api.ShowResponse:
        origin = request.origin or self.node_id
        if not is_node_id(origin):
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"origin: not a node id: {origin!r}",
            )
        subject = subject_id(origin, request.ref)
        versions = self.store.versions(subject)
        if not versions:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"{subject} is not held by {self.node_id}",
            )
        superseded_by = self.library.superseded_by(subject)
        return _history(subject, versions, self.store, superseded_by)

    def SearchStatements(
        self, request: api.SearchStatementsRequest, context: grpc.ServicerContext
    ) -> api.SearchStatementsResponse:
        found = self.library.search_statements(
            _terms(request.text, context),
            category=_category(request.category, context),
            since=_time_or_none(request, "since"),
            until=_time_or_none(request, "until"),
            limit=_page(request.limit),
        )
        hits = [_statement_hit(f) for f in found]
        return api.SearchStatementsResponse(statements=hits)

    def SearchCases(
        self, request: api.SearchCasesRequest, context: grpc.ServicerContext
    ) -> api.SearchCasesResponse:
        found = self.library.search_cases(
            _terms(request.text, context),
            category=_category(request.category, context),
            limit=_page(request.limit),
        )
        return api.SearchCasesResponse(cases=[_case_hit(f) for f in found])

    def Inbox(
        self, request: api.InboxRequest, context: grpc.ServicerContext
    ) -> api.InboxResponse:
        entries = self.store.received(request.after_seq, _page(request.limit))
        response = api.InboxResponse()
        size = 0
        for entry in entries:
            message = _stored(entry)
            size += message.ByteSize()
            # A page stays under gRPC's 4 MiB message limit; the client asks
            # again after the last one it got.
            if response.messages and size > MAX_PAGE_BYTES:
                break
            response.messages.append(message)
        return response

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
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"ref: {request.ref!r} was not published by {self.node_id}",
            )
        return api.DeliveryResponse(
            subject_id=entry.subject_id,
            subject_version=entry.subject_version,
            destinations=[_destination(d) for d in self.store.decisions_for(entry.seq)],
        )

    def Status(
        self, request: api.StatusRequest, context: grpc.ServicerContext
    ) -> api.StatusResponse:
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


def _terms(text: str, context: grpc.ServicerContext) -> list[str]:
    try:
        return search_terms(text)
    except ValueError as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"text: {exc}")


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


def _publishing(
    context: grpc.ServicerContext, action: Callable[[], Published]
) -> api.PublishResponse:
    """Run a publisher call; a record it refuses is the caller's error."""
    try:
        published = action()
    except InvalidRecord as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except GuantongError as exc:
        # Refused by what this node holds (a request move whose state
        # changed under it, say).
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    return _published(published)


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, details: str
) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("unreachable: abort raises")


def _published(published: Published) -> api.PublishResponse:
    return api.PublishResponse(
        message_id=published.message_id,
        subject_id=published.subject_id,
        subject_version=published.subject_version,
        destinations=[_destination(d) for d in published.decisions],
    )


def _time_or_none(request: Message, name: str) -> datetime | None:
    return getattr(request, name).ToDatetime(UTC) if request.HasField(name) else None


def _category(number: int, context: grpc.ServicerContext) -> str | None:
    if not number:
        return None
    if number not in CATEGORY_CODES:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"category: unknown number {number}",
        )
    return CATEGORY_CODES[number]


def _category_number(code: str | None) -> pb.Category:
    return CATEGORIES[code][0] if code else pb.CATEGORY_UNSPECIFIED


def _history(
    subject: str,
    versions: Sequence[LogEntry],
    store: Store,
    superseded_by: str | None,
) -> api.ShowResponse:
    """A subject's versions from the log; on the origin, where each went."""
    opened = [read_stored(entry.envelope) for entry in versions]
    last = opened[-1]
    # A retraction is a version of the subject; the subject is what it withdrew.
    kinds = [o.envelope.kind for o in opened if o.kind != "retraction"]
    own_kind = kinds[-1] if kinds else last.envelope.kind
    response = api.ShowResponse(
        subject_id=subject,
        origin=last.envelope.origin_node,
        ref=last.envelope.ref,
        kind=own_kind,
        latest_version=last.envelope.subject_version,
        superseded_by=superseded_by or "",
    )
    if last.kind == "retraction":
        response.retracted = True
        response.retracted_version = last.envelope.subject_version
        response.retraction_reason = last.record.retraction.reason
    for entry, version in zip(versions, opened, strict=True):
        shown = response.versions.add(
            version=entry.subject_version,
            kind=version.envelope.kind,
            message_id=entry.message_id,
            author_unit=version.envelope.author_unit,
            created_at=version.envelope.created_at,
            stored_at=timestamp(entry.stored_at),
            received_from=entry.received_from or "",
            record=version.record,
        )
        if entry.received_from is None:
            decisions = store.decisions_for(entry.seq)
            shown.destinations.extend(_destination(d) for d in decisions)
    return response


def _statement_hit(found: Found) -> api.StatementHit:
    return api.StatementHit(
        subject_id=found.subject_id,
        origin=found.origin,
        ref=found.ref,
        version=found.version,
        statement=read_stored(found.envelope).record.statement,
        category=_category_number(found.category),
        issued_at=timestamp(found.at),
        received_from=found.received_from or "",
        superseded_by=found.superseded_by or "",
        retracted=found.retracted,
    )


def _case_hit(found: Found) -> api.CaseHit:
    return api.CaseHit(
        subject_id=found.subject_id,
        origin=found.origin,
        ref=found.ref,
        version=found.version,
        incident=read_stored(found.envelope).record.incident,
        closed_at=timestamp(found.at),
        received_from=found.received_from or "",
        retracted=found.retracted,
    )
