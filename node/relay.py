"""Onward sharing: passing on a record this node received.

The national office relaying a province's incident to other provinces is the
case this is for. A relay is allowed only when:

- this node holds the record and received it from a peer (its own records
  are published, not relayed);
- the copy it holds is not marked ``no_further_sharing``: the agreement it
  arrived under lets receivers pass records on (``onward_sharing: true``);
- this node's own agreements allow the record from this node to the target,
  judged on the record's facts with this node as the sender;
- the target is neither the origin nor already on the record's path.

The relayed envelope keeps the origin's message id, subject, version and
payload (less what the relaying hop's agreement withholds), appends this node
to its path, names the hop's agreement, and is always marked
``no_further_sharing``: one relay hop, never a chain. Later versions and the
retraction of a relayed subject follow to every node it was relayed to, as
they do from an origin to its holders.

Gap (issue 4): a receiver cannot check that the origin's agreement allowed
onward sharing; it trusts the relayer's copy until envelopes carry the
origin's signature (DESIGN §5).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

import structlog
from guantong.v1 import records_pb2 as pb

from gateway.policy import Decision, PolicyHolder
from node.clock import Clock
from node.envelopes import Opened, read_stored
from node.errors import InvalidRecord
from node.holders import retraction_decisions, with_holders
from node.publishing import Publisher
from node.records import facts_of, incident_subject_of, subject_id
from node.storage import Store
from node.storage.subjects import Subjects
from node.storage.types import DecisionRow, LogEntry

log = structlog.get_logger(__name__)

ON_PATH = "already-on-path"


class Relayer:
    def __init__(
        self,
        node_id: str,
        store: Store,
        policies: PolicyHolder,
        publisher: Publisher,
        clock: Clock,
        on_queued: Callable[[Collection[str]], None] = lambda peers: None,
    ):
        self.node_id = node_id
        self.store = store
        self.policies = policies
        self.publisher = publisher
        self.clock = clock
        self.on_queued = on_queued
        self.subjects = Subjects(store)

    def forward(
        self, origin: str, ref: str, to_nodes: Sequence[str] = ()
    ) -> list[DecisionRow]:
        """Relay the newest held version of ``origin``'s ``ref``.

        ``to_nodes`` empty means every node the agreements allow. Returns a
        decision for every node considered; raises InvalidRecord when the
        record may not be passed on at all.
        """
        held = self.store.latest(subject_id(origin, ref))
        if held is None:
            raise InvalidRecord("ref", f"{origin}/{ref} is not held by {self.node_id}")
        if held.received_from is None:
            raise InvalidRecord(
                "origin", f"{origin}/{ref} is {self.node_id}'s own; publish it instead"
            )
        opened = read_stored(held.envelope)
        if held.kind == "retraction":
            raise InvalidRecord("ref", f"{origin}/{ref} was retracted")
        if opened.envelope.no_further_sharing:
            raise InvalidRecord(
                "ref",
                f"{origin}/{ref} arrived under {opened.envelope.agreement_id} "
                f"v{opened.envelope.agreement_version}, which does not let receivers "
                "pass it on (no further sharing)",
            )

        policy = self.policies.current
        facts = facts_of(opened.record, origin, self._incident(opened))
        decided = {d.receiver for d in self.store.decisions_for(held.seq)}
        decisions = []
        for target in to_nodes or [
            n for n in sorted(policy.nodes) if n != self.node_id
        ]:
            if target in decided:
                continue  # relayed already; a second relay would send nothing new
            if target in opened.envelope.path or target == self.node_id:
                decisions.append(_on_path(target))
            else:
                decisions.append(
                    policy.decide(facts, self.node_id, target, self.clock.now())
                )
        return self._queue(held, opened, decisions)

    def follow(self, subjects: Collection[str]) -> None:
        """After new versions are received: pass the newest of each subject on
        to where earlier versions were relayed (retractions included)."""
        for subject in sorted(self.subjects.relayed_among(subjects)):
            entry = self.store.latest(subject)
            holders = self.subjects.holders(subject, relayed=True)
            if entry is None or not holders:
                continue
            opened = read_stored(entry.envelope)
            policy = self.policies.current
            facts = facts_of(opened.record, entry.origin, self._incident(opened))
            nodes = [holder.node for holder in holders]
            if entry.kind == "retraction":
                decisions = retraction_decisions(holders, nodes, policy, facts, subject)
            else:
                now = self.clock.now()
                fresh = [
                    policy.decide(facts, self.node_id, node, now) for node in nodes
                ]
                decisions = with_holders(fresh, holders, policy, facts)
            self._queue(entry, opened, [d for d in decisions if d.receiver in nodes])

    def _queue(
        self, held: LogEntry, opened: Opened, decisions: Sequence[Decision]
    ) -> list[DecisionRow]:
        envelope = pb.Envelope()
        envelope.CopyFrom(opened.envelope)
        envelope.path.append(self.node_id)
        del envelope.withheld_fields[:]
        # A relayed copy is never passed on again, whatever the hop allows.
        one_hop = [replace(d, no_further_sharing=True) for d in decisions]
        rows, outbox = self.publisher.route(envelope, opened.record, one_hop)
        if rows:
            self.store.route_held(held.seq, rows, outbox, self.clock.now())
        queued = [peer for peer, _ in outbox]
        log.info(
            "record.relayed",
            origin=held.origin,
            ref=held.ref,
            version=held.subject_version,
            message_id=held.message_id,
            queued_for=queued,
        )
        if queued:
            self.on_queued(queued)
        return rows

    def _incident(self, opened: Opened) -> pb.IncidentReport | None:
        incident_subject = incident_subject_of(opened.record)
        if incident_subject is None:
            return None
        held = self.store.latest(incident_subject)
        if held is None or held.kind != "incident":
            return None
        return read_stored(held.envelope).record.incident


def _on_path(target: str) -> Decision:
    return Decision(
        receiver=target,
        allowed=False,
        agreement_id=None,
        agreement_version=None,
        rule=ON_PATH,
        reason=f"{target} is the record's origin or already passed it on",
    )
