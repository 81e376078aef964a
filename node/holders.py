"""Routing by delivery history: updates and retractions reach who holds a subject.

The agreements decide who may receive a record. For a subject that already
went somewhere, two rules add to them:

- An update (version 2 onwards) goes to every node that holds an earlier
  version, even when the agreements would not share the new version from
  scratch — say its level was lowered below a threshold. A holder must not
  keep a stale picture. Nodes that never held the subject get only what the
  agreements allow.
- A retraction goes to every node that holds any version, and to no other,
  whatever the agreements now say.

Either way a holder gets it under the agreement it got the earlier version
under, with that agreement's withholding applied to the new version, and the
decision row says so ("holds an earlier version ..."). Who holds what comes
from the publisher's own outbox and decisions (``Subjects.holders``).

Gap (issue 3): holding is per subject. A retraction of an incident does not
withdraw its statements, and a new statement of an incident whose level was
lowered goes only where the agreements allow now, not to the incident's
holders (whose receivers would refuse it too, holding no version of it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.policy import Decision, PolicySet
from node.records import RecordFacts
from node.storage.subjects import Holder

HELD_EARLIER = "held-earlier-version"
NEVER_HELD = "never-held"


def with_holders(
    decisions: Sequence[Decision],
    holders: Sequence[Holder],
    policy: PolicySet,
    facts: RecordFacts,
) -> list[Decision]:
    """``decisions`` for an update, with every holder the agreements now deny
    allowed by its delivery history."""
    by_node = {holder.node: holder for holder in holders}
    routed = []
    for decision in decisions:
        holder = by_node.pop(decision.receiver, None)
        if decision.allowed or holder is None:
            routed.append(decision)
        else:
            routed.append(
                _holder_decision(
                    holder,
                    policy,
                    facts,
                    f"; the agreements alone would not send it ({decision.rule}: "
                    f"{decision.reason})",
                )
            )
    # Holders the agreements no longer know as nodes at all.
    routed.extend(_holder_decision(h, policy, facts, "") for h in by_node.values())
    return sorted(routed, key=lambda decision: decision.receiver)


def retraction_decisions(
    holders: Sequence[Holder],
    receivers: Iterable[str],
    policy: PolicySet,
    facts: RecordFacts,
    subject_id: str,
) -> list[Decision]:
    """A retraction's decisions: holders get it, every other node is told why not."""
    by_node = {holder.node: holder for holder in holders}
    decisions = []
    for node in sorted(set(receivers) | set(by_node)):
        holder = by_node.get(node)
        if holder is not None:
            decisions.append(_holder_decision(holder, policy, facts, ""))
            continue
        decisions.append(
            Decision(
                receiver=node,
                allowed=False,
                agreement_id=None,
                agreement_version=None,
                rule=NEVER_HELD,
                reason=f"{node} never received a version of {subject_id}; a retraction "
                "goes only to the nodes that hold one",
            )
        )
    return decisions


def _holder_decision(
    holder: Holder, policy: PolicySet, facts: RecordFacts, note: str
) -> Decision:
    agreement = policy.agreement(holder.agreement_id) if holder.agreement_id else None
    sent_under = (
        f"{holder.agreement_id} v{holder.agreement_version}"
        if holder.agreement_id
        else "no recorded agreement"
    )
    version: int | None
    if agreement is not None:
        withheld = tuple(
            sorted(agreement.withheld_fields(facts.kind, holder.node, facts.level))
        )
        version = agreement.version
    else:
        # The agreement is no longer loaded (or none was recorded): withhold at
        # least what the earlier version's hop withheld. Gap (issue 3): nothing
        # here knows what a removed agreement would have withheld from the new
        # version's fields.
        withheld = holder.withheld_fields
        version = holder.agreement_version
    reason = (
        f"{holder.node} holds an earlier version (v{holder.version}, sent under "
        f"{sent_under}){note}"
    )
    return Decision(
        receiver=holder.node,
        allowed=True,
        agreement_id=holder.agreement_id,
        agreement_version=version,
        rule=f"{holder.agreement_id or 'history'}/{HELD_EARLIER}",
        reason=reason,
        withheld_fields=withheld,
    )
