"""Building and reading envelopes. Payloads are bytes: what is stored, hashed
and (later) signed is exactly what a receiver reads back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError
from guantong.v1 import records_pb2 as pb

from node.errors import InvalidRecord
from node.records import KINDS, kind_of, timestamp
from node.storage import content_digest
from node.storage.types import NewEntry


@dataclass(frozen=True)
class Opened:
    """An envelope with its record parsed."""

    envelope: pb.Envelope
    record: pb.Record

    @property
    def kind(self) -> str:
        return kind_of(self.record)


def seal(
    *,
    message_id: str,
    origin: str,
    author_unit: str,
    created_at: datetime,
    subject_id: str,
    subject_version: int,
    ref: str,
    record: pb.Record,
    exercise: bool,
) -> pb.Envelope:
    """The origin's envelope for a record, before any agreement is applied."""
    return pb.Envelope(
        message_id=message_id,
        origin_node=origin,
        author_unit=author_unit,
        created_at=timestamp(created_at),
        kind=KINDS[kind_of(record)],
        subject_id=subject_id,
        subject_version=subject_version,
        ref=ref,
        payload=record.SerializeToString(deterministic=True),
        path=[origin],
        exercise=exercise,
    )


def open_envelope(envelope: pb.Envelope) -> Opened:
    """Parse the payload and check it agrees with the envelope's header."""
    record = pb.Record()
    try:
        record.ParseFromString(envelope.payload)
    except DecodeError as exc:
        raise InvalidRecord("envelope.payload", "is not a Record") from exc
    body = record.WhichOneof("body")
    if body is None or KINDS.get(body) != envelope.kind:
        raise InvalidRecord(
            "envelope.kind", f"says {envelope.kind} but the payload holds {body}"
        )
    if body == "incident" and record.incident.exercise != envelope.exercise:
        raise InvalidRecord(
            "envelope.exercise", "differs from the incident's exercise mark"
        )
    for name in ("message_id", "origin_node", "subject_id", "ref"):
        if not getattr(envelope, name):
            raise InvalidRecord(f"envelope.{name}", "is required")
    if envelope.subject_version < 1:
        raise InvalidRecord("envelope.subject_version", "must be 1 or more")
    return Opened(envelope=envelope, record=record)


def read_stored(envelope_bytes: bytes) -> Opened:
    envelope = pb.Envelope()
    envelope.ParseFromString(envelope_bytes)
    return open_envelope(envelope)


def log_entry_for(envelope: pb.Envelope, kind: str) -> NewEntry:
    return NewEntry(
        origin=envelope.origin_node,
        message_id=envelope.message_id,
        kind=kind,
        subject_id=envelope.subject_id,
        subject_version=envelope.subject_version,
        ref=envelope.ref,
        envelope=envelope.SerializeToString(deterministic=True),
        content_sha256=content_digest(
            envelope.payload, kind, envelope.subject_id, envelope.subject_version
        ),
    )
