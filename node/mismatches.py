"""Version mismatches: a peer enforcing another version of a shared agreement.

Both ends check every message against their own copy of the agreements and
the stricter outcome wins, so a mismatch leaks nothing; but the two admins
should hear of it, since one of them has not rolled out the other's change.
This node finds mismatches in its own store, two ways:

* ``received``: every envelope a peer sends is stamped with the agreement and
  version it was sent under. The newest message from a peer under an
  agreement shows the version that peer enforces; if ours differs, that is
  a mismatch (this covers the receiver that removed extra fields under its
  stricter copy, and the one whose copy is looser).
* ``refused_by_peer``: a peer that refused what this node sent under its own
  copy answered with a reason, and decision reasons name the agreement as
  ``central-china v2``. If the newest such refusal names another version
  than the one the message was sent under, that is a mismatch.

Known gaps (issue 4), where both admins do not yet see every mismatch:

* A receiver records a refusal without the envelope's agreement id and
  version (the ``refusals`` table has no columns for them and
  ``gateway/delivery/receiver.py`` does not pass them), so a refusal caused
  by a stricter copy does not show here on the receiving side; it shows only
  as a refusal in ``guantong status``.
* A receiver that accepts after removing extra fields answers ``ACCEPTED``
  with no word of it (``DeliveryResult`` carries no agreement version), so
  the sending side never learns of that mismatch; and a refusal whose reason
  names no version (``nothing of substance is left ...``, ``no-common-
  agreement``) is not recognised as one. Reading the version out of the
  reason text is a stop-gap until ``DeliveryResult`` carries it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from guantong.v1 import records_pb2 as pb

from gateway.policy import PolicySet
from node.storage import admin
from node.storage.schema import DEAD_LETTER

RECEIVED = "received"
REFUSED_BY_PEER = "refused_by_peer"
# How a sender's outbox row records a peer's refusal under its agreements.
_REFUSED_OUTCOME = "REFUSED_BY_AGREEMENT"


@dataclass(frozen=True)
class Mismatch:
    """A peer works under another version of an agreement than this node."""

    peer: str
    agreement_id: str
    # The version in force here (0: this node does not hold the agreement).
    ours: int
    theirs: int
    # RECEIVED or REFUSED_BY_PEER: where it was seen.
    seen_as: str
    # Messages among the recent ones that show it.
    messages: int
    last_at: datetime | None


def find_mismatches(reader: admin.Reader, policy_set: PolicySet) -> list[Mismatch]:
    """Mismatches seen in the recent messages received and refused, sorted."""
    found = _newest_per_peer(_received(reader), policy_set, RECEIVED)
    found += _newest_per_peer(_refused_by_peers(reader), policy_set, REFUSED_BY_PEER)
    return sorted(found, key=lambda m: (m.peer, m.agreement_id, m.seen_as))


# (peer, agreement id), the peer's version, when; newest first.
_Stamp = tuple[tuple[str, str], int, datetime | None]


def _received(reader: admin.Reader) -> Iterator[_Stamp]:
    for row in admin.recent_received(reader):
        envelope = pb.Envelope.FromString(row.envelope)
        if envelope.agreement_id:
            key = (row.sender, envelope.agreement_id)
            yield key, envelope.agreement_version, row.stored_at


def _refused_by_peers(reader: admin.Reader) -> Iterator[_Stamp]:
    for row in admin.recent_sent(reader, DEAD_LETTER):
        outcome = row.outcome or ""
        if not outcome.startswith(_REFUSED_OUTCOME):
            continue
        envelope = pb.Envelope.FromString(row.envelope)
        theirs = _version_named(outcome, envelope.agreement_id)
        if theirs is not None and theirs != envelope.agreement_version:
            yield (row.peer, envelope.agreement_id), theirs, row.settled_at


def _newest_per_peer(
    stamps: Iterable[_Stamp], policy_set: PolicySet, seen_as: str
) -> list[Mismatch]:
    """The peer's newest version per agreement, where it differs from ours."""
    newest: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    counts: Counter[tuple[str, str]] = Counter()
    for key, version, at in stamps:
        newest.setdefault(key, (version, at))
        if newest[key][0] == version:
            counts[key] += 1

    mismatches = []
    for (peer, agreement_id), (theirs, last_at) in newest.items():
        ours = _our_version(policy_set, agreement_id)
        if ours != theirs:
            messages = counts[(peer, agreement_id)]
            mismatches.append(
                Mismatch(peer, agreement_id, ours, theirs, seen_as, messages, last_at)
            )
    return mismatches


def _our_version(policy_set: PolicySet, agreement_id: str) -> int:
    agreement = policy_set.agreement(agreement_id)
    return agreement.version if agreement is not None else 0


def _version_named(reason: str, agreement_id: str) -> int | None:
    """N in ``<agreement_id> vN`` (an agreement's label) within a reason."""
    if not agreement_id:
        return None
    match = re.search(rf"(?<![\w-]){re.escape(agreement_id)} v(\d+)\b", reason)
    return int(match.group(1)) if match else None
