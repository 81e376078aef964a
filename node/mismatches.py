"""Version mismatches: a peer enforcing another version of a shared agreement.

Both ends check every message against their own copy of the agreements and
the stricter outcome wins, so a mismatch leaks nothing; but the two admins
should hear of it, since one of them has not rolled out the other's change.
This node finds mismatches in its own store, from both ends of its exchanges:

* ``received``: every envelope a peer sends is stamped with the agreement and
  version it was sent under. Messages stored here (``log``) and messages
  refused here (``refusals``, which keep the envelope's stamp) both show the
  version that peer enforces.
* ``sent``: a peer answers every message this node sends with its own
  version of the agreement the envelope names, and the fields its copy
  withheld beyond ours; the sender keeps that answer on the outbox row,
  whether the peer accepted the message or refused it.

For each peer and agreement the newest message decides the peer's version:
if ours differs (0 where a side holds no agreement of that id), that is a
mismatch. Ours is the version in force now, so a mismatch clears as soon as
this node rolls out the peer's version, and otherwise once the peer's newest
messages show the version in force here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from guantong.v1 import records_pb2 as pb

from gateway.policy import PolicySet
from node.storage import admin
from node.storage.schema import DEAD_LETTER

RECEIVED = "received"
SENT = "sent"
# How the refusals table records a message refused under our agreements.
_REFUSED_BY_AGREEMENT = "refused_by_agreement"
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Mismatch:
    """A peer works under another version of an agreement than this node."""

    peer: str
    agreement_id: str
    # The version in force here (0: this node does not hold the agreement).
    ours: int
    # The peer's version (0: the peer does not hold the agreement).
    theirs: int
    # RECEIVED or SENT: in which direction's messages it was seen.
    seen_as: str
    # Messages among the recent ones that show it.
    messages: int
    last_at: datetime | None
    # Of those, how many were refused: here (RECEIVED), by the peer (SENT).
    refused: int = 0
    # SENT: the fields the peer's copy withheld beyond ours in those messages.
    withheld_fields: tuple[str, ...] = ()


def find_mismatches(reader: admin.Reader, policy_set: PolicySet) -> list[Mismatch]:
    """Mismatches seen in the recent messages received and sent, sorted."""
    # Stored and refused messages, merged newest first (a stable sort keeps
    # each list's order between messages of one batch, which share a time).
    received = sorted(_received(reader), key=_at, reverse=True)
    found = _newest_per_peer(received, policy_set, RECEIVED)
    found += _newest_per_peer(_answered(reader), policy_set, SENT)
    return sorted(found, key=lambda m: (m.peer, m.agreement_id, m.seen_as))


@dataclass(frozen=True)
class _Seen:
    """One message that shows the version a peer enforces."""

    peer: str
    agreement_id: str
    version: int
    at: datetime | None
    refused: bool = False
    withheld_fields: tuple[str, ...] = ()


def _at(seen: _Seen) -> datetime:
    return seen.at or _LONG_AGO


def _received(reader: admin.Reader) -> Iterator[_Seen]:
    """What peers sent here, stored or refused, each list newest first."""
    for row in admin.recent_received(reader):
        envelope = pb.Envelope.FromString(row.envelope)
        if envelope.agreement_id:
            yield _Seen(
                row.sender,
                envelope.agreement_id,
                envelope.agreement_version,
                row.stored_at,
            )
    for refusal in admin.recent_refused(reader):
        yield _Seen(
            refusal.sender,
            refusal.agreement_id,
            refusal.agreement_version,
            refusal.at,
            refused=refusal.outcome == _REFUSED_BY_AGREEMENT,
        )


def _answered(reader: admin.Reader) -> Iterator[_Seen]:
    """The peers' answers to what this node sent, newest first."""
    for row in admin.recent_answered(reader):
        yield _Seen(
            row.peer,
            row.peer_agreement_id,
            row.peer_agreement_version,
            row.settled_at,
            refused=row.state == DEAD_LETTER,
            withheld_fields=row.withheld_by_peer,
        )


def _newest_per_peer(
    seen: Iterable[_Seen], policy_set: PolicySet, seen_as: str
) -> list[Mismatch]:
    """The peer's newest version per agreement, where it differs from ours."""
    newest: dict[tuple[str, str], _Seen] = {}
    messages: dict[tuple[str, str], list[_Seen]] = {}
    for one in seen:
        key = (one.peer, one.agreement_id)
        first = newest.setdefault(key, one)
        if first.version == one.version:
            messages.setdefault(key, []).append(one)

    mismatches = []
    for (peer, agreement_id), first in newest.items():
        ours = _our_version(policy_set, agreement_id)
        if ours == first.version:
            continue
        showing = messages[(peer, agreement_id)]
        withheld = {field for one in showing for field in one.withheld_fields}
        mismatches.append(
            Mismatch(
                peer,
                agreement_id,
                ours,
                first.version,
                seen_as,
                messages=len(showing),
                last_at=first.at,
                refused=sum(one.refused for one in showing),
                withheld_fields=tuple(sorted(withheld)),
            )
        )
    return mismatches


def _our_version(policy_set: PolicySet, agreement_id: str) -> int:
    agreement = policy_set.agreement(agreement_id)
    return agreement.version if agreement is not None else 0
