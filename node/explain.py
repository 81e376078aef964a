"""What the agreements in force would do with one of this node's records.

The admin API's ``Explain`` and ``guantong policy diff --config`` ask the
policy engine about records this node holds, the way the publisher would if
the record were published now: ``PolicySet.decide_all`` for every known
node, then the agreement's withheld fields removed, and a delivery that
withholding leaves without substance dropped. A statement or request is
judged by the facts of its incident as this node holds it (the newest
version); if the incident is not held, category and level are unknown and
any condition on them fails.

A record this node published (``guantong policy explain --ref``, the admin
API's ``Explain`` by ref) is decided by the publisher's own function,
``node.publishing.decide``, with the subject's delivery history: an update
(version 2 onwards) also goes to every node that holds an earlier version,
and a retraction goes to the holders and no other (``node.holders``). Who
holds an earlier version is read as it stands now, counting versions older
than the one explained. A record given as a file or in the request has no
history and is decided by the agreements alone.

On a running node one more thing decides whether a node gets the record: the
publisher queues it only for nodes configured as peers. ``explain`` says so
with the publisher's own rule names.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from guantong.v1 import records_pb2 as pb

from gateway.policy import Decision, PolicySet, apply_withholding
from gateway.policy.outcome import SampleRecord
from node.envelopes import read_stored
from node.errors import GuantongError
from node.publishing import NO_ROUTE, NOTHING_LEFT, decide
from node.records import facts_of, incident_subject_of, subject_id
from node.storage import Store, admin
from node.storage.subjects import Subjects
from node.storage.types import LogEntry


class NotPublishedHere(GuantongError):
    """No record with this ref was published by this node."""

    def __init__(self, node_id: str, ref: str):
        self.node_id = node_id
        self.ref = ref
        super().__init__(f"ref: {ref!r} was not published by {node_id}")


@dataclass(frozen=True)
class NodeOutcome:
    """Whether one node would receive the record, and why (not)."""

    decision: Decision
    receives: bool
    # The decision's rule and reason, or why an allowed record is kept back.
    rule: str
    reason: str


def outcomes(
    sample: SampleRecord,
    policy_set: PolicySet,
    now: datetime,
    peers: Collection[str] | None = None,
    decisions: Sequence[Decision] | None = None,
) -> list[NodeOutcome]:
    """For every known node but the sender, sorted: would it receive ``sample``?

    ``peers``: the nodes the sender has addresses for; None leaves routing out.
    ``decisions``: the policy decisions to start from (``history_decisions``
    for a published record); None asks the agreements alone.
    """
    if decisions is None:
        decisions = policy_set.decide_all(sample.facts, sample.sender, now)
    results = []
    for decision in decisions:
        rule, reason = decision.rule, decision.reason
        receives = decision.allowed
        kept = apply_withholding(sample.record, decision.withheld_fields)
        if receives and kept is None:
            receives, rule = False, NOTHING_LEFT
            reason = (
                "nothing of substance is left once the agreement's withheld fields "
                f"({', '.join(decision.withheld_fields)}) are removed"
            )
        elif receives and peers is not None and decision.receiver not in peers:
            receives, rule = False, NO_ROUTE
            reason = (
                f"allowed, but this node has no address for {decision.receiver} "
                "in its peers"
            )
        results.append(NodeOutcome(decision, receives, rule, reason))
    return results


# --- records this node holds ----------------------------------------------------


def sample_of(
    reader: admin.Reader, sender: str, ref: str, record: pb.Record
) -> SampleRecord:
    """``record`` from ``sender``, with its incident's facts as held here."""
    incident_subject = incident_subject_of(record)
    incident = None
    if incident_subject is not None:
        held = admin.latest(reader, incident_subject)
        if held is not None and held.kind == "incident":
            incident = read_stored(held.envelope).record.incident
    facts = facts_of(record, sender, incident)
    known = incident_subject is None or incident is not None
    return SampleRecord(ref, sender, record, facts, known)


def published_sample(
    reader: admin.Reader, node_id: str, ref: str
) -> tuple[SampleRecord, LogEntry]:
    """The newest version of ``ref`` as published by ``node_id``, ready to decide."""
    entry = admin.latest(reader, subject_id(node_id, ref))
    if entry is None or entry.received_from is not None:
        raise NotPublishedHere(node_id, ref)
    record = read_stored(entry.envelope).record
    return sample_of(reader, node_id, ref, record), entry


def history_decisions(
    store: Store,
    sample: SampleRecord,
    entry: LogEntry,
    policy_set: PolicySet,
    now: datetime,
) -> Sequence[Decision]:
    """What the publisher would decide now for the published version ``entry``
    of ``sample``: the agreements plus the subject's delivery history."""
    subjects = Subjects(store)
    return decide(
        policy_set,
        sample.sender,
        entry.subject_id,
        sample.facts,
        entry.subject_version > 1,
        lambda: subjects.holders(entry.subject_id, before=entry.subject_version),
        now,
    )


def published_samples(reader: admin.Reader) -> list[SampleRecord]:
    """The newest version of every record published here, in log order."""
    return [
        sample_of(reader, entry.origin, entry.ref, read_stored(entry.envelope).record)
        for entry in admin.published_latest(reader)
    ]
