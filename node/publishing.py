"""Publishing: a local client's record becomes a log entry and outbox rows.

The record, what every agreement said about it for every known node, and one
outbox row per peer that may receive it are committed in one transaction;
only then is the publish acknowledged. Each outbox row holds the envelope
exactly as that peer will get it, with the fields its agreement withholds
already removed, so a resend or a catch-up after an outage sends the same bytes
the live path would have.

Records change by new versions: publishing a ref again makes the next version
of the same subject, and it reaches the nodes the agreements allow plus every
node that holds an earlier version (``node.holders``). A retraction is a
version too, routed by delivery history alone; after it the subject takes no
more versions. Closing an incident is a version with status closed and the
review notes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from guantong.v1 import records_pb2 as pb

from gateway.policy import Decision, PolicyHolder, PolicySet, apply_withholding
from node.appliers import Appliers
from node.clock import Clock
from node.envelopes import Opened, log_entry_for, read_stored, seal
from node.errors import InvalidRecord
from node.holders import retraction_decisions, with_holders
from node.records import (
    INCIDENT_OPTIONAL_KINDS,
    RecordFacts,
    facts_of,
    incident_subject_of,
    kind_of,
    subject_id,
    validate,
    validate_ref,
)
from node.storage import Store
from node.storage.schema import PENDING
from node.storage.subjects import Holder, Subjects
from node.storage.types import DecisionRow, LogEntry

log = structlog.get_logger(__name__)

NO_ROUTE = "no-peer-address"
NOTHING_LEFT = "nothing-left-after-withholding"


# Called with the record, its incident and the time of publishing, before
# the record is sealed: sets what the node derives (a request's deadline).
Prepare = Callable[[pb.Record, pb.IncidentReport | None, datetime], pb.Record]


@dataclass(frozen=True)
class Published:
    message_id: str
    subject_id: str
    subject_version: int
    decisions: tuple[DecisionRow, ...]


class Publisher:
    """Turns local publishes into log entries, decisions and outbox rows."""

    def __init__(
        self,
        node_id: str,
        store: Store,
        policies: PolicyHolder,
        peers: Callable[[], Collection[str]],
        clock: Clock,
        on_queued: Callable[[Collection[str]], None] = lambda peers: None,
        appliers: Appliers | None = None,
        prepare: Prepare | None = None,
    ):
        self.node_id = node_id
        self.store = store
        self.policies = policies
        self.peers = peers
        self.clock = clock
        self.on_queued = on_queued
        self.appliers = appliers or Appliers()
        self.prepare: Prepare = prepare or (lambda record, incident, now: record)
        self.subjects = Subjects(store)
        # Versions are numbered under this lock; the log's unique
        # (subject, version) constraint backs it up across processes. Re-entrant
        # so that close() can read the newest version and publish the next one
        # without another version slipping in between.
        self._numbering = threading.RLock()

    def publish(self, ref: str, record: pb.Record, author_unit: str = "") -> Published:
        """Validate, decide, store; raise InvalidRecord naming the bad field."""
        validate_ref(ref)
        validate(record)
        kind = kind_of(record)
        subject = subject_id(self.node_id, ref)
        self._check_addressees(record)
        self._check_supersedes(subject, record)

        with self._numbering:
            held = self.store.latest(subject)
            # Read once: the checks below all look at the newest version held.
            held_copy = read_stored(held.envelope) if held is not None else None
            _check_next_version(ref, subject, record, held, held_copy)
            version = held.subject_version + 1 if held is not None else 1
            incident = self._incident_for(record)
            facts = facts_of(record, self.node_id, incident)
            now = self.clock.now()
            record = self.prepare(record, incident, now)
            if (
                held is not None
                and held_copy is not None
                and held_copy.record == record
            ):
                # A retry of a publish that already went through (a client
                # that timed out, say) must not make a second version.
                log.info("record.unchanged", ref=ref, version=held.subject_version)
                decisions_held = tuple(self.store.decisions_for(held.seq))
                return Published(
                    held.message_id, subject, held.subject_version, decisions_held
                )
            decisions = self._decide(subject, facts, held, now)
            _check_someone_may_receive(kind, decisions)
            envelope = seal(
                message_id=uuid.uuid4().hex,
                origin=self.node_id,
                author_unit=author_unit,
                created_at=now,
                subject_id=subject,
                subject_version=version,
                ref=ref,
                record=record,
                exercise=_exercise(facts, held_copy),
            )
            rows, outbox = self.route(envelope, record, decisions)
            self.store.append_published(
                log_entry_for(envelope, kind),
                rows,
                outbox,
                now,
                apply=self.appliers.hook(None),
            )

        queued = [peer for peer, _ in outbox]
        log.info(
            "record.published",
            ref=ref,
            kind=kind,
            message_id=envelope.message_id,
            version=version,
            queued_for=queued,
            exercise=envelope.exercise,
        )
        for row in rows:
            log.info(
                "policy.decided",
                message_id=envelope.message_id,
                receiver=row.receiver,
                decision="allow" if row.allowed else "deny",
                agreement=row.agreement_id,
                agreement_version=row.agreement_version,
                rule=row.rule,
            )
        if queued:
            self.on_queued(queued)
        return Published(envelope.message_id, subject, version, tuple(rows))

    def retract(self, ref: str, reason: str, author_unit: str = "") -> Published:
        """Withdraw this node's subject ``ref`` everywhere it went."""
        subject = subject_id(self.node_id, ref)
        retraction = pb.Retraction(subject_id=subject, reason=reason)
        return self.publish(ref, pb.Record(retraction=retraction), author_unit)

    def close(self, ref: str, review: str, author_unit: str = "") -> Published:
        """Close this node's incident ``ref`` with its review notes (复盘)."""
        validate_ref(ref)
        with self._numbering:
            held = self.store.latest(subject_id(self.node_id, ref))
            if held is None or held.kind != "incident":
                what = f"a {held.kind}" if held is not None else "nothing"
                raise InvalidRecord(
                    "ref",
                    f"{ref!r} names {what} published by {self.node_id}, "
                    "not an incident",
                )
            record = pb.Record()
            record.CopyFrom(read_stored(held.envelope).record)
            if record.incident.status == pb.INCIDENT_CLOSED:
                raise InvalidRecord(
                    "ref",
                    f"{ref!r} is already closed (version {held.subject_version}); "
                    "its review stands",
                )
            record.incident.status = pb.INCIDENT_CLOSED
            record.incident.review = review
            return self.publish(ref, record, author_unit)

    def _check_supersedes(self, subject: str, record: pb.Record) -> None:
        """A statement replaces another statement of this node, not itself."""
        if kind_of(record) != "statement" or not record.statement.supersedes:
            return
        target = record.statement.supersedes
        if target == subject:
            raise InvalidRecord(
                "statement.supersedes", "a statement cannot supersede itself"
            )
        held = self.store.latest(target)
        if held is None or held.origin != self.node_id:
            raise InvalidRecord(
                "statement.supersedes",
                f"{target!r} is not a statement of {self.node_id}",
            )
        if held.kind != "statement":
            raise InvalidRecord(
                "statement.supersedes",
                f"{target!r} is not a statement but the {held.kind} it names",
            )

    def _check_addressees(self, record: pb.Record) -> None:
        """A record addressed to nodes must name nodes of the federation."""
        known = self.policies.current.nodes
        kind = kind_of(record)
        addressed = {
            "joint_request": ("joint_request.to_node", [record.joint_request.to_node]),
            "notice": ("notice.to_nodes", list(record.notice.to_nodes)),
        }.get(kind)
        if addressed is None:
            return
        field, nodes = addressed
        if len(set(nodes)) != len(nodes):
            raise InvalidRecord(field, "names a node more than once")
        for node in nodes:
            if node not in known:
                raise InvalidRecord(
                    field,
                    f"{node} is not a node of the federation "
                    f"({', '.join(sorted(known))})",
                )

    def _decide(
        self, subject: str, facts: RecordFacts, held: LogEntry | None, now: datetime
    ) -> Sequence[Decision]:
        """What the agreements, and the subject's delivery history, say."""
        return decide(
            self.policies.current,
            self.node_id,
            subject,
            facts,
            held is not None,
            lambda: self.subjects.holders(subject),
            now,
        )

    def _incident_for(self, record: pb.Record) -> pb.IncidentReport | None:
        """The newest held version of the incident a record belongs to."""
        incident_subject = incident_subject_of(record)
        if incident_subject is None:
            return None
        held = self.store.latest(incident_subject)
        if kind_of(record) in INCIDENT_OPTIONAL_KINDS and (
            held is None or held.kind != "incident"
        ):
            return None
        if held is not None and held.kind == "retraction":
            raise InvalidRecord(
                f"{kind_of(record)}.incident_subject",
                f"incident {incident_subject!r} is retracted",
            )
        if held is None or held.kind != "incident":
            raise InvalidRecord(
                f"{kind_of(record)}.incident_subject",
                f"no incident {incident_subject!r} is held by this node",
            )
        return read_stored(held.envelope).record.incident

    def route(
        self, envelope: pb.Envelope, record: pb.Record, decisions: Sequence[Decision]
    ) -> tuple[list[DecisionRow], list[tuple[str, bytes]]]:
        """Decision rows for every node, and the per-peer envelopes to queue."""
        peers = set(self.peers())
        rows: list[DecisionRow] = []
        outbox: list[tuple[str, bytes]] = []
        for decision in decisions:
            row = DecisionRow(
                receiver=decision.receiver,
                allowed=decision.allowed,
                agreement_id=decision.agreement_id,
                agreement_version=decision.agreement_version,
                rule=decision.rule,
                reason=decision.reason,
                withheld_fields=tuple(decision.withheld_fields),
            )
            if decision.allowed:
                hop = self._hop(envelope, record, decision)
                if hop is None:
                    row = replace(
                        row,
                        allowed=False,
                        rule=NOTHING_LEFT,
                        reason="nothing of substance is left once the agreement's "
                        "withheld fields "
                        f"({', '.join(decision.withheld_fields)}) are removed",
                    )
                elif decision.receiver not in peers:
                    row = replace(
                        row,
                        rule=NO_ROUTE,
                        reason=f"allowed, but this node has no "
                        f"address for {decision.receiver} in its peers",
                    )
                else:
                    outbox.append((decision.receiver, hop))
                    row = replace(row, delivery_state=PENDING)
            rows.append(row)
        return rows, outbox

    def _hop(
        self, envelope: pb.Envelope, record: pb.Record, decision: Decision
    ) -> bytes | None:
        """The envelope as ``decision.receiver`` gets it, or None if empty."""
        hop = pb.Envelope()
        hop.CopyFrom(envelope)
        if decision.withheld_fields:
            kept = apply_withholding(record, decision.withheld_fields)
            if kept is None:
                return None
            hop.payload = kept.SerializeToString(deterministic=True)
            hop.withheld_fields.extend(decision.withheld_fields)
        hop.agreement_id = decision.agreement_id or ""
        hop.agreement_version = decision.agreement_version or 0
        hop.no_further_sharing = decision.no_further_sharing
        return hop.SerializeToString(deterministic=True)


def decide(
    policy: PolicySet,
    sender: str,
    subject: str,
    facts: RecordFacts,
    update: bool,
    holders: Callable[[], Sequence[Holder]],
    now: datetime,
) -> Sequence[Decision]:
    """For every node but ``sender``: what the agreements, and the subject's
    delivery history, say about publishing ``facts`` as a version of ``subject``.

    ``update``: an earlier version of the subject exists. ``holders``: who
    holds an earlier version, asked only for an update or a retraction. The
    publisher decides with this, and ``node.explain`` explains with it.
    """
    if facts.kind == "retraction":
        receivers = (node for node in policy.nodes if node != sender)
        return retraction_decisions(holders(), receivers, policy, facts, subject)
    decisions = policy.decide_all(facts, sender, now)
    if not update:
        return decisions
    return with_holders(decisions, holders(), policy, facts)


def _check_next_version(
    ref: str,
    subject: str,
    record: pb.Record,
    held: LogEntry | None,
    held_copy: Opened | None,
) -> None:
    """Whether ``record`` may be the next version of the subject ``held``."""
    kind = kind_of(record)
    if held is None:
        if kind == "retraction":
            raise InvalidRecord(
                "ref", f"nothing has been published under {ref!r} to retract"
            )
        return
    if held.kind == "retraction":
        raise InvalidRecord(
            "ref",
            f"{ref!r} was retracted at version {held.subject_version}; a retracted "
            "subject takes no more versions (publish under a new ref)",
        )
    if kind == "retraction":
        if record.retraction.subject_id != subject:
            raise InvalidRecord(
                "retraction.subject_id",
                f"must be {subject!r}, the subject it is published as a version of",
            )
        return
    if held.kind != kind:
        raise InvalidRecord("ref", f"{ref!r} already names a {held.kind}, not a {kind}")
    before = _addressees(held_copy.record) if held_copy is not None else None
    if before is not None and before != _addressees(record):
        # A new version goes where the earlier ones went; readdressing would
        # send the new text to the old addressees. Publish under a new ref.
        field, nodes = before
        raise InvalidRecord(
            field,
            f"{ref!r} was addressed to {', '.join(nodes) or 'every node'}; the "
            "addressees of a request or notice cannot change (use a new ref)",
        )


def _check_someone_may_receive(kind: str, decisions: Sequence[Decision]) -> None:
    """A request or notice that no agreement lets reach anyone is refused:
    published, it would wait for an answer that cannot come."""
    if kind not in ("joint_request", "notice") or any(d.allowed for d in decisions):
        return
    field = "joint_request.to_node" if kind == "joint_request" else "notice.to_nodes"
    addressed = [d for d in decisions if d.rule != "no-common-agreement"] or decisions
    why = addressed[0] if addressed else None
    reason = f"{why.receiver}: {why.reason}" if why else "no node is known"
    raise InvalidRecord(field, f"no agreement lets this {kind} reach anyone ({reason})")


def _addressees(record: pb.Record) -> tuple[str, tuple[str, ...]] | None:
    """The field and sorted nodes a request or notice is addressed to."""
    kind = kind_of(record)
    if kind == "joint_request":
        return "joint_request.to_node", (record.joint_request.to_node,)
    if kind == "notice":
        return "notice.to_nodes", tuple(sorted(set(record.notice.to_nodes)))
    return None


def _exercise(facts: RecordFacts, held_copy: Opened | None) -> bool:
    """A retraction of a drill is a drill too; other records carry their own mark."""
    if facts.kind == "retraction" and held_copy is not None:
        return held_copy.envelope.exercise
    return facts.exercise
