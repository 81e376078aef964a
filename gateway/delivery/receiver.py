"""The receiving side of a Push: check, store and apply, then acknowledge.

The caller's node id comes from its verified certificate and is passed in;
nothing in the envelopes can change who is calling. Each envelope is checked
on its own — well formed, sent by its origin, allowed by this node's own copy
of the agreements — and everything that passes is stored in one transaction,
keyed on (origin, message id). A redelivered duplicate is a successful no-op;
the same id with other content is rejected and recorded. Refusals are recorded
in the audit table, never stored as records, and never stall the messages
after them in the batch. Every result and refusal names the agreement the
envelope was sent under with this node's version of it, and a result the
fields this node's copy withheld beyond the sender's: that is how the sender
learns of a copy other than its own (``node.mismatches``).

Records change by new versions of a subject, and only the subject's origin
may publish them: a subject id must be ``<origin>/<ref>``. A version not newer
than the newest held, or any version after a retraction, is a recorded no-op
answered as a duplicate, so the sender settles it rather than retrying it for
ever. An update of a subject this node already holds passes even when this
node's agreements would not let the new version in from scratch, and a
retraction passes only for a subject this node holds (see ``_admit``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import structlog
from guantong.v1 import records_pb2 as pb

from gateway.policy import PolicyHolder, PolicySet, apply_withholding
from node.appliers import Appliers
from node.clock import Clock
from node.envelopes import Opened, log_entry_for, open_envelope, read_stored
from node.errors import InvalidRecord
from node.records import (
    KIND_NAMES,
    RecordFacts,
    facts_of,
    incident_subject_of,
    subject_id,
)
from node.storage import Store
from node.storage.types import (
    AgreementStamp,
    NewEntry,
    Received,
    ReceiveOutcome,
    Refusal,
)

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
    # The agreement the envelope names, with our version of it, answered to
    # the sender so it learns of a mismatch; None when it names none.
    agreement: AgreementStamp | None = None
    # Fields our copy withheld beyond the sender's (accepted or duplicate).
    withheld_by_receiver: tuple[str, ...] = ()


# What the refusals table calls a recorded no-op for an old version.
STALE_VERSION = "stale_version"
# ... and a message refused by the state this node holds (node.appliers).
REFUSED_BY_STATE = "refused_by_state"


@dataclass
class _Batch:
    """What earlier envelopes of one batch admitted, for those after them."""

    # Incidents, for statements that follow them.
    incidents: dict[str, pb.IncidentReport] = field(default_factory=dict)
    # Every subject admitted, for updates and retractions that follow.
    subjects: set[str] = field(default_factory=set)


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
        on_accepted: Callable[[set[str]], None] = lambda subjects: None,
    ):
        self.node_id = node_id
        self.store = store
        self.policies = policies
        self.clock = clock
        self.on_stored = on_stored
        self.appliers = appliers or Appliers()
        self.on_accepted = on_accepted

    def push(self, sender: str, envelopes: Sequence[pb.Envelope]) -> list[Result]:
        """Results in the order of ``envelopes``."""
        now = self.clock.now()
        results: list[Result | None] = [None] * len(envelopes)
        to_store: list[tuple[int, NewEntry]] = []
        refusals: list[Refusal] = []
        batch = _Batch()
        stamps = [_stamp(self.policies.current, e) for e in envelopes]
        withheld: dict[int, tuple[str, ...]] = {}

        for index, envelope in enumerate(envelopes):
            try:
                opened = self._admit(sender, envelope, batch)
            except Refused as refused:
                outcome, reason, stamp = refused.outcome, refused.reason, stamps[index]
                results[index] = Result(envelope.message_id, outcome, reason, stamp)
                refusals.append(_refusal(now, sender, envelope, outcome, reason, stamp))
                continue
            if opened.kind == "incident":
                batch.incidents[opened.envelope.subject_id] = opened.record.incident
            batch.subjects.add(opened.envelope.subject_id)
            to_store.append((index, log_entry_for(opened.envelope, opened.kind)))
            withheld[index] = _withheld_beyond(envelope, opened.envelope)

        outcomes = self.store.append_received(
            [entry for _, entry in to_store],
            sender,
            now,
            apply=self.appliers.hook(sender),
            check=self.appliers.check_hook(sender),
        )
        for (index, entry), stored in zip(to_store, outcomes, strict=True):
            result = self._result(sender, entry, stored, now, refusals, stamps[index])
            results[index] = _answered(result, stamps[index], withheld[index])

        self.store.record_refusals(refusals)
        accepted = [
            entry
            for (index, entry) in to_store
            if (answered := results[index]) is not None
            and answered.outcome is Outcome.ACCEPTED
        ]
        if accepted:
            self.on_stored()
            self._after_accepted({entry.subject_id for entry in accepted})
        return [r for r in results if r is not None]

    def _after_accepted(self, subjects: set[str]) -> None:
        """Hand the subjects that got a new version on (to relays).

        What is stored stays stored and acknowledged whatever happens here.
        """
        try:
            self.on_accepted(subjects)
        except Exception:
            log.exception("message.after_accepted_failed", subjects=sorted(subjects))

    def _admit(self, sender: str, envelope: pb.Envelope, batch: _Batch) -> Opened:
        """The envelope ready to store, or Refused saying why not."""
        try:
            opened = open_envelope(envelope)
        except InvalidRecord as exc:
            raise Refused(Outcome.REJECTED_INVALID, str(exc)) from exc

        origin = envelope.origin_node
        if origin != sender:
            _check_relayed(sender, envelope)
        if envelope.subject_id != subject_id(origin, envelope.ref):
            # Only a subject's origin may publish versions of it, and the
            # subject id names the origin.
            raise Refused(
                Outcome.REJECTED_INVALID,
                f"subject {envelope.subject_id!r} is not {origin}'s: only a subject's "
                f"origin may publish versions of it, and {origin}'s subject for ref "
                f"{envelope.ref!r} is {subject_id(origin, envelope.ref)!r}",
            )
        if opened.kind == "retraction":
            return self._admit_retraction(opened, batch)

        incident_subject = incident_subject_of(opened.record)
        incident = None
        if incident_subject:
            incident = batch.incidents.get(incident_subject) or self._held_incident(
                incident_subject
            )
        facts = facts_of(opened.record, origin, incident)
        decision = self.policies.current.decide(
            facts, sender, self.node_id, self.clock.now()
        )
        if not decision.allowed:
            if not self._holds(envelope.subject_id, origin, batch):
                raise Refused(Outcome.REFUSED_BY_AGREEMENT, decision.reason)
            # This node already holds an earlier version from the same origin:
            # the update passes although our agreements would not let the new
            # version in from scratch (a level lowered below a threshold, say),
            # so that we do not keep a stale picture. Whether it is newer than
            # what we hold is the store's to judge.
            log.info(
                "policy.update_of_held_subject",
                message_id=envelope.message_id,
                subject=envelope.subject_id,
                version=envelope.subject_version,
                denied_by=decision.rule,
            )
            fields = self._withheld_under_own_copy(facts, envelope)
            return self._apply_own_withholding(opened, fields)

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

    def _admit_retraction(self, opened: Opened, batch: _Batch) -> Opened:
        """A retraction travels by history, not by the agreements' flows: it is
        taken from a subject's origin for a subject this node holds."""
        envelope = opened.envelope
        if opened.record.retraction.subject_id != envelope.subject_id:
            raise Refused(
                Outcome.REJECTED_INVALID,
                f"the retraction withdraws {opened.record.retraction.subject_id!r} "
                f"but is sent as a version of {envelope.subject_id!r}",
            )
        if not self._holds(envelope.subject_id, envelope.origin_node, batch):
            raise Refused(
                Outcome.REFUSED_BY_AGREEMENT,
                f"retraction of {envelope.subject_id}, which this node never held",
            )
        facts = facts_of(opened.record, envelope.origin_node)
        fields = self._withheld_under_own_copy(facts, envelope)
        return self._apply_own_withholding(opened, fields)

    def _holds(self, subject: str, origin: str, batch: _Batch) -> bool:
        """Whether a version of ``subject`` from ``origin`` is held here."""
        if subject in batch.subjects:
            return True
        held = self.store.latest(subject)
        return held is not None and held.origin == origin

    def _withheld_under_own_copy(
        self, facts: RecordFacts, envelope: pb.Envelope
    ) -> tuple[str, ...]:
        """What our copy of the agreement the sender named withholds.

        Gap (issue 3): if that agreement is not in our copy any more, nothing
        extra is withheld from an update of a held subject.
        """
        agreement = self.policies.current.agreement(envelope.agreement_id)
        if agreement is None:
            return ()
        fields = agreement.withheld_fields(facts.kind, self.node_id, facts.level)
        return tuple(sorted(fields))

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
        stored: Received,
        now,
        refusals: list[Refusal],
        stamp: AgreementStamp | None = None,
    ) -> Result:
        def refusal(outcome: str) -> Refusal:
            return Refusal(
                now,
                sender,
                entry.origin,
                entry.message_id,
                entry.kind,
                outcome,
                stored.reason,
                stamp,
            )

        if stored.outcome is ReceiveOutcome.ACCEPTED:
            log.info(
                "message.received",
                origin=entry.origin,
                message_id=entry.message_id,
                kind=entry.kind,
                ref=entry.ref,
                version=entry.subject_version,
            )
            return Result(entry.message_id, Outcome.ACCEPTED)
        if stored.outcome is ReceiveOutcome.DUPLICATE:
            log.info(
                "message.duplicate", origin=entry.origin, message_id=entry.message_id
            )
            return Result(entry.message_id, Outcome.DUPLICATE)
        if stored.outcome is ReceiveOutcome.STALE:
            # Answered as a duplicate so the sender settles it; recorded, since
            # a stale version arriving says something about the sender.
            log.info(
                "message.stale",
                origin=entry.origin,
                message_id=entry.message_id,
                subject=entry.subject_id,
                reason=stored.reason,
            )
            refusals.append(refusal(STALE_VERSION))
            return Result(entry.message_id, Outcome.DUPLICATE, stored.reason)
        if stored.outcome is ReceiveOutcome.REFUSED:
            log.warning(
                "message.refused_by_state",
                origin=entry.origin,
                message_id=entry.message_id,
                kind=entry.kind,
                reason=stored.reason,
            )
            refusals.append(refusal(REFUSED_BY_STATE))
            return Result(entry.message_id, Outcome.REJECTED_INVALID, stored.reason)
        log.warning(
            "message.conflict",
            origin=entry.origin,
            message_id=entry.message_id,
            reason=stored.reason,
        )
        refusals.append(refusal(Outcome.REJECTED_INVALID.value))
        return Result(entry.message_id, Outcome.REJECTED_INVALID, stored.reason)


def _check_relayed(sender: str, envelope: pb.Envelope) -> None:
    """A record relayed by ``sender`` rather than sent by its origin.

    It must say so: its path runs from the origin to the sender, and it is
    marked no further sharing (one relay hop only, see ``node.relay``). Whether
    the sender may send it to us is then the agreements' to decide, with the
    sender as the sender. Gap (issue 4): that the origin's agreement allowed
    onward sharing is the relayer's word until envelopes are signed.
    """
    path = list(envelope.path)
    if len(path) < 2 or path[0] != envelope.origin_node or path[-1] != sender:
        raise Refused(
            Outcome.REFUSED_BY_AGREEMENT,
            f"{sender} sent a record from {envelope.origin_node}, but its path "
            f"{' -> '.join(path) or '(empty)'} does not run from the origin "
            f"to {sender}",
        )
    if not envelope.no_further_sharing:
        raise Refused(
            Outcome.REJECTED_INVALID,
            f"a record relayed by {sender} must carry the no-further-sharing mark",
        )


def _refusal(
    now,
    sender: str,
    envelope: pb.Envelope,
    outcome: Outcome,
    reason: str,
    stamp: AgreementStamp | None = None,
) -> Refusal:
    log.warning(
        "message.refused",
        origin=envelope.origin_node,
        message_id=envelope.message_id,
        outcome=outcome.value,
        reason=reason,
    )
    if stamp is not None and stamp.sent_version != stamp.own_version:
        log.warning(
            "policy.version_mismatch",
            peer=sender,
            agreement=stamp.agreement_id,
            ours=stamp.own_version,
            theirs=stamp.sent_version,
            message_id=envelope.message_id,
            refused=True,
        )
    return Refusal(
        at=now,
        sender=sender,
        origin=envelope.origin_node or "?",
        message_id=envelope.message_id or "?",
        kind=KIND_NAMES.get(envelope.kind, "unknown"),
        outcome=outcome.value,
        reason=reason,
        agreement=stamp,
    )


def _stamp(policy_set: PolicySet, envelope: pb.Envelope) -> AgreementStamp | None:
    """The agreement ``envelope`` was sent under, with our version of it.

    It is our copy of that agreement, not whichever agreement our decision
    fell under, that the sender needs to compare with its own.
    """
    if not envelope.agreement_id:
        return None
    ours = policy_set.agreement(envelope.agreement_id)
    return AgreementStamp(
        envelope.agreement_id,
        envelope.agreement_version,
        ours.version if ours is not None else 0,
    )


def _withheld_beyond(sent: pb.Envelope, admitted: pb.Envelope) -> tuple[str, ...]:
    """What our copy withheld that the sender had sent (see _apply_own_withholding)."""
    return tuple(f for f in admitted.withheld_fields if f not in sent.withheld_fields)


def _answered(
    result: Result, stamp: AgreementStamp | None, withheld: tuple[str, ...]
) -> Result:
    """``result`` with what the sender should hear of our copy of the agreement."""
    taken = result.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)
    return replace(
        result, agreement=stamp, withheld_by_receiver=withheld if taken else ()
    )
