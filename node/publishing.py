"""Publishing: a local client's record becomes a log entry and outbox rows.

The record, what every agreement said about it for every known node, and one
outbox row per peer that may receive it are committed in one transaction;
only then is the publish acknowledged. Each outbox row holds the envelope
exactly as that peer will get it, with the fields its agreement withholds
already removed, so a resend or a catch-up after an outage sends the same bytes
the live path would have.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

import structlog

from gateway.policy import Decision, PolicyHolder, apply_withholding
from guantong.v1 import records_pb2 as pb
from node.appliers import Appliers
from node.clock import Clock
from node.envelopes import log_entry_for, read_stored, seal
from node.errors import InvalidRecord
from node.records import facts_of, incident_subject_of, kind_of, subject_id, validate, validate_ref
from node.storage import Store
from node.storage.schema import PENDING
from node.storage.types import DecisionRow

log = structlog.get_logger(__name__)

NO_ROUTE = "no-peer-address"
NOTHING_LEFT = "nothing-left-after-withholding"


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
    ):
        self.node_id = node_id
        self.store = store
        self.policies = policies
        self.peers = peers
        self.clock = clock
        self.on_queued = on_queued
        self.appliers = appliers or Appliers()
        # Versions are numbered under this lock; the log's unique
        # (subject, version) constraint backs it up across processes.
        self._numbering = threading.Lock()

    def publish(self, ref: str, record: pb.Record, author_unit: str = "") -> Published:
        """Validate, decide, store; raise InvalidRecord naming the bad field."""
        validate_ref(ref)
        validate(record)
        kind = kind_of(record)
        incident = self._incident_for(record)
        facts = facts_of(record, self.node_id, incident)
        now = self.clock.now()
        policy = self.policies.current
        decisions = policy.decide_all(facts, self.node_id, now)
        subject = subject_id(self.node_id, ref)

        with self._numbering:
            version = self.store.latest_version(subject) + 1
            held = self.store.latest(subject)
            if held is not None and held.kind != kind:
                raise InvalidRecord("ref", f"{ref!r} already names a {held.kind}, not a {kind}")
            envelope = seal(
                message_id=uuid.uuid4().hex,
                origin=self.node_id,
                author_unit=author_unit,
                created_at=now,
                subject_id=subject,
                subject_version=version,
                ref=ref,
                record=record,
                exercise=facts.exercise,
            )
            rows, outbox = self._route(envelope, record, decisions)
            self.store.append_published(
                log_entry_for(envelope, kind), rows, outbox, now, apply=self.appliers.hook(None)
            )

        queued = [peer for peer, _ in outbox]
        log.info(
            "record.published",
            ref=ref,
            kind=kind,
            message_id=envelope.message_id,
            version=version,
            queued_for=queued,
            exercise=facts.exercise,
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

    def _incident_for(self, record: pb.Record) -> pb.IncidentReport | None:
        """The newest held version of the incident a record belongs to."""
        incident_subject = incident_subject_of(record)
        if incident_subject is None:
            return None
        held = self.store.latest(incident_subject)
        if held is None or held.kind != "incident":
            raise InvalidRecord(
                f"{kind_of(record)}.incident_subject",
                f"no incident {incident_subject!r} is held by this node",
            )
        return read_stored(held.envelope).record.incident

    def _route(
        self, envelope: pb.Envelope, record: pb.Record, decisions: list[Decision]
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
                        f"withheld fields ({', '.join(decision.withheld_fields)}) are removed",
                    )
                elif decision.receiver not in peers:
                    row = replace(row, rule=NO_ROUTE, reason=f"allowed, but this node has no "
                                  f"address for {decision.receiver} in its peers")
                else:
                    outbox.append((decision.receiver, hop))
                    row = replace(row, delivery_state=PENDING)
            rows.append(row)
        return rows, outbox

    def _hop(self, envelope: pb.Envelope, record: pb.Record, decision: Decision) -> bytes | None:
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
        return hop.SerializeToString(deterministic=True)
