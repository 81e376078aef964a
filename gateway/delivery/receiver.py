"""The receiving side of a Push: check, store and apply, then acknowledge.

The caller's node id comes from its verified certificate and is passed in;
nothing in the envelopes can change who is calling. Each envelope is checked
on its own — well formed, sent by its origin, allowed by this node's own copy
of the agreements — and everything that passes is stored in one transaction,
keyed on (origin, message id). A redelivered duplicate is a successful no-op;
the same id with other content is rejected and recorded. Refusals are recorded
in the audit table, never stored as records, and never stall the messages
after them in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import structlog

from gateway.policy import PolicyHolder, apply_withholding
from guantong.v1 import records_pb2 as pb
from node.appliers import Appliers
from node.clock import Clock
from node.envelopes import Opened, log_entry_for, open_envelope, read_stored
from node.errors import InvalidRecord
from node.records import KIND_NAMES, facts_of, incident_subject_of
from node.storage import Store
from node.storage.types import NewEntry, ReceiveOutcome, Refusal

log = structlog.get_logger(__name__)


class Outcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED_BY_AGREEMENT = "refused_by_agreement"
    REJECTED_INVALID = "rejected_invalid"


@dataclass(frozen=True)
class Result:
    message_id: str
    outcome: Outcome
    reason: str = ""


class Refused(Exception):
    """One envelope is refused; carries the outcome and the reason."""

    def __init__(self, outcome: Outcome, reason: str):
        self.outcome = outcome
        self.reason = reason
        super().__init__(reason)


class Receiver:
    def __init__(
        self,
        node_id: str,
        store: Store,
        policies: PolicyHolder,
        clock: Clock,
        on_stored: Callable[[], None] = lambda: None,
        appliers: Appliers | None = None,
    ):
        self.node_id = node_id
        self.store = store
        self.policies = policies
        self.clock = clock
        self.on_stored = on_stored
        self.appliers = appliers or Appliers()

    def push(self, sender: str, envelopes: Sequence[pb.Envelope]) -> list[Result]:
        """Results in the order of ``envelopes``."""
        now = self.clock.now()
        results: list[Result | None] = [None] * len(envelopes)
        to_store: list[tuple[int, NewEntry]] = []
        refusals: list[Refusal] = []
        # Incidents earlier in this batch, for statements that follow them.
        batch_incidents: dict[str, pb.IncidentReport] = {}

        for index, envelope in enumerate(envelopes):
            try:
                opened = self._admit(sender, envelope, batch_incidents)
            except Refused as refused:
                results[index] = Result(envelope.message_id, refused.outcome, refused.reason)
                refusals.append(_refusal(now, sender, envelope, refused.outcome, refused.reason))
                continue
            if opened.kind == "incident":
                batch_incidents[opened.envelope.subject_id] = opened.record.incident
            to_store.append((index, log_entry_for(opened.envelope, opened.kind)))

        outcomes = self.store.append_received(
            [entry for _, entry in to_store], sender, now, apply=self.appliers.hook(sender)
        )
        for (index, entry), stored in zip(to_store, outcomes, strict=True):
            results[index] = self._result(sender, entry, stored, now, refusals)

        self.store.record_refusals(refusals)
        if any(r is not None and r.outcome is Outcome.ACCEPTED for r in results):
            self.on_stored()
        return [r for r in results if r is not None]

    def _admit(
        self, sender: str, envelope: pb.Envelope, batch_incidents: dict[str, pb.IncidentReport]
    ) -> Opened:
        """The envelope ready to store, or Refused saying why not."""
        try:
            opened = open_envelope(envelope)
        except InvalidRecord as exc:
            raise Refused(Outcome.REJECTED_INVALID, str(exc)) from exc

        if envelope.origin_node != sender:
            raise Refused(
                Outcome.REFUSED_BY_AGREEMENT,
                f"{sender} may only send its own records; this one is from "
                f"{envelope.origin_node} and onward sharing is not enabled",
            )

        incident_subject = incident_subject_of(opened.record)
        incident = None
        if incident_subject:
            incident = batch_incidents.get(incident_subject) or self._held_incident(
                incident_subject
            )
        facts = facts_of(opened.record, envelope.origin_node, incident)
        decision = self.policies.current.decide(facts, sender, self.node_id, self.clock.now())
        if not decision.allowed:
            raise Refused(Outcome.REFUSED_BY_AGREEMENT, decision.reason)

        if decision.agreement_id == envelope.agreement_id and (
            decision.agreement_version != envelope.agreement_version
        ):
            log.warning(
                "policy.version_mismatch",
                agreement=decision.agreement_id,
                ours=decision.agreement_version,
                theirs=envelope.agreement_version,
                message_id=envelope.message_id,
            )
        return self._apply_own_withholding(opened, decision.withheld_fields)

    def _apply_own_withholding(self, opened: Opened, fields: Sequence[str]) -> Opened:
        """Stricter wins: remove what our copy withholds and the sender sent."""
        extra = [f for f in fields if f not in opened.envelope.withheld_fields]
        if not extra:
            return opened
        kept = apply_withholding(opened.record, extra)
        if kept is None:
            raise Refused(
                Outcome.REFUSED_BY_AGREEMENT,
                f"nothing of substance is left once {', '.join(extra)} are withheld",
            )
        envelope = pb.Envelope()
        envelope.CopyFrom(opened.envelope)
        envelope.payload = kept.SerializeToString(deterministic=True)
        envelope.withheld_fields.extend(extra)
        log.warning(
            "policy.stricter_applied",
            message_id=envelope.message_id,
            agreement=envelope.agreement_id,
            withheld=extra,
        )
        return Opened(envelope=envelope, record=kept)

    def _held_incident(self, incident_subject: str) -> pb.IncidentReport | None:
        held = self.store.latest(incident_subject)
        if held is None or held.kind != "incident":
            return None
        return read_stored(held.envelope).record.incident

    def _result(
        self,
        sender: str,
        entry: NewEntry,
        stored: ReceiveOutcome,
        now,  # type: ignore[no-untyped-def]
        refusals: list[Refusal],
    ) -> Result:
        if stored is ReceiveOutcome.ACCEPTED:
            log.info(
                "message.received",
                origin=entry.origin,
                message_id=entry.message_id,
                kind=entry.kind,
                ref=entry.ref,
                version=entry.subject_version,
            )
            return Result(entry.message_id, Outcome.ACCEPTED)
        if stored is ReceiveOutcome.DUPLICATE:
            log.info("message.duplicate", origin=entry.origin, message_id=entry.message_id)
            return Result(entry.message_id, Outcome.DUPLICATE)
        reason = "this message id (or this subject version) is already held with other content"
        log.warning("message.conflict", origin=entry.origin, message_id=entry.message_id)
        refusals.append(
            Refusal(now, sender, entry.origin, entry.message_id, entry.kind,
                    Outcome.REJECTED_INVALID.value, reason)
        )
        return Result(entry.message_id, Outcome.REJECTED_INVALID, reason)


def _refusal(now, sender: str, envelope: pb.Envelope, outcome: Outcome, reason: str) -> Refusal:  # type: ignore[no-untyped-def]
    log.warning(
        "message.refused",
        origin=envelope.origin_node,
        message_id=envelope.message_id,
        outcome=outcome.value,
        reason=reason,
    )
    return Refusal(
        at=now,
        sender=sender,
        origin=envelope.origin_node or "?",
        message_id=envelope.message_id or "?",
        kind=KIND_NAMES.get(envelope.kind, "unknown"),
        outcome=outcome.value,
        reason=reason,
    )
