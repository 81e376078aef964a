"""Plain typed objects the store hands out; ORM rows stay in the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


@dataclass(frozen=True)
class NewEntry:
    """A message about to be appended to the log."""

    origin: str
    message_id: str
    kind: str
    subject_id: str
    subject_version: int
    ref: str
    envelope: bytes
    content_sha256: str


@dataclass(frozen=True)
class LogEntry:
    seq: int
    origin: str
    message_id: str
    kind: str
    subject_id: str
    subject_version: int
    ref: str
    envelope: bytes
    received_from: str | None
    stored_at: datetime


@dataclass(frozen=True)
class DecisionRow:
    """What the agreements said about one record for one receiver."""

    receiver: str
    allowed: bool
    agreement_id: str | None
    agreement_version: int | None
    rule: str
    reason: str
    withheld_fields: tuple[str, ...] = ()
    # PENDING, DELIVERED, DEAD_LETTER; None when nothing was queued.
    delivery_state: str | None = None


@dataclass(frozen=True)
class OutboxItem:
    id: int
    envelope: bytes


@dataclass(frozen=True)
class PeerBackoff:
    peer: str
    failed_attempts: int
    next_attempt_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class PeerCounts:
    peer: str
    pending: int
    delivered: int
    dead_letters: int


@dataclass(frozen=True)
class AgreementStamp:
    """The agreement a received message was sent under, and our copy of it."""

    agreement_id: str
    # The version the sender stamped on the envelope.
    sent_version: int
    # The version this node enforces; 0 when it holds no agreement of that id.
    own_version: int


@dataclass(frozen=True)
class Refusal:
    at: datetime
    sender: str
    origin: str
    message_id: str
    kind: str
    outcome: str
    reason: str
    # None when the envelope names no agreement.
    agreement: AgreementStamp | None = None


@dataclass(frozen=True)
class PeerAnswer:
    """A peer's word on its copy of the agreement a message was sent under."""

    agreement_id: str
    # The version the peer enforces; 0 when it holds no agreement of that id.
    agreement_version: int
    # Fields the peer's copy withheld beyond those this node had withheld.
    withheld_fields: tuple[str, ...] = ()


class ReceiveOutcome(Enum):
    ACCEPTED = "accepted"
    # Already held with the same content: nothing changed.
    DUPLICATE = "duplicate"
    # Not newer than the newest version held, or the subject is retracted:
    # nothing changed, and the receiver records why.
    STALE = "stale"
    # The same message id, or the same subject version, held with other content.
    CONFLICT = "conflict"
    # Well formed and allowed, but not applicable in the state this node
    # holds (a request move from the wrong state, say): not stored, and the
    # receiver records why.
    REFUSED = "refused"


@dataclass(frozen=True)
class Received:
    """What storing one received message did, and why when it did nothing."""

    outcome: ReceiveOutcome
    reason: str = ""
