"""The sharing decision: may this record go from this sender to this receiver?

The default is deny. An agreement allows a record only when

1. sender and receiver are both among its members,
2. it is in force at the moment of the decision (``valid_from`` ..
   ``valid_until``, calendar days in China time), and
3. one of its flows matches: the sender is in the flow's ``from``, the
   receiver in its ``to``, the record's kind in its ``kinds``, the record is
   addressed to the receiver (when it carries an address list) and every
   condition on category, level, exercise mark and heat holds.

Facts with an unknown category or level (a statement whose incident this node
does not hold) fail any condition on category or level.

Known gap (issue 4): a statement or request is judged by its incident's facts
as the *deciding* node holds them. The sender holds the incident; a receiver
the incident never went to (a flow shares statements but not incidents, or
the incident's level kept it back) does not, so the sender allows and the
receiver refuses ("the level is unknown"): a dead letter instead of a clear
denial. The sender should also require the incident to reach, or be held by,
the receiver. The sharing property test draws incidents only for this reason.

When several agreements allow, the one that withholds the most fields wins,
then the one that forbids onward sharing, then the first by id: two
agreements that both let a record through must not widen each other's
field control. The reason says which others also allowed it.

When none allows, the decision explains the nearest miss. Each agreement is
walked through the steps above and scored by how far the record got; within
an agreement each flow is scored by how many of its conditions held before
the first that failed. The furthest miss across all agreements gives the
rule and reason, so an admin reads "level Ⅳ 一般 is not among Ⅰ, Ⅱ, Ⅲ" rather
than "denied".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.policy.model import Agreement, Decision, Flow, NodeInfo
from node.records import CATEGORIES, LEVEL_LABELS, RecordFacts

# How far a record got into an agreement; higher is closer to being allowed.
_NOT_IN_FORCE = 1
_FIRST_FLOW_STEP = 2

# The flow conditions, in the order a record meets them. Each returns None
# when the condition holds, else the reason it does not.
_FlowCheck = Callable[[Flow, RecordFacts, str, str], str | None]


@dataclass(frozen=True)
class _Miss:
    """Why one agreement did not allow, and how close it came."""

    closeness: int
    agreement: Agreement
    rule: str
    reason: str


@dataclass(frozen=True)
class PolicySet:
    """The agreements a node enforces, with the known nodes.

    Immutable: a reload builds a new PolicySet (see PolicyHolder), so a
    decision never sees half of an old file and half of a new one.
    """

    agreements: tuple[Agreement, ...]
    nodes: dict[str, NodeInfo]
    warnings: tuple[str, ...] = ()
    _by_id: dict[str, Agreement] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {agreement.id: agreement for agreement in self.agreements}
        object.__setattr__(self, "_by_id", by_id)

    def agreement(self, agreement_id: str) -> Agreement | None:
        """The agreement with this id, if loaded."""
        return self._by_id.get(agreement_id)

    def decide(
        self, facts: RecordFacts, sender: str, receiver: str, now: datetime
    ) -> Decision:
        """Whether a record with ``facts`` may go from sender to receiver."""
        if now.tzinfo is None:
            raise ValueError("decide needs a timezone-aware time")
        for node in (sender, receiver):
            if node not in self.nodes:
                return _deny(receiver, "unknown-node", f"{node} is not a known node")
        if sender == receiver:
            return _deny(receiver, "same-node", f"{sender} does not send to itself")

        allowed: list[tuple[Agreement, Flow]] = []
        misses: list[_Miss] = []
        for agreement in self.agreements:
            if not {sender, receiver} <= agreement.members:
                continue
            outcome = _evaluate(agreement, facts, sender, receiver, now)
            if isinstance(outcome, _Miss):
                misses.append(outcome)
            else:
                allowed.append((agreement, outcome))

        if allowed:
            return _allow(allowed, facts, receiver)
        if misses:
            return _deny_with(max(misses, key=lambda miss: miss.closeness), receiver)
        return _deny(
            receiver,
            "no-common-agreement",
            f"{sender} and {receiver} share no agreement",
        )

    def decide_all(
        self,
        facts: RecordFacts,
        sender: str,
        now: datetime,
        receivers: Iterable[str] | None = None,
    ) -> list[Decision]:
        """A decision for each receiver (default: every other known node), sorted."""
        if receivers is None:
            receivers = (node for node in self.nodes if node != sender)
        return [
            self.decide(facts, sender, node, now) for node in sorted(set(receivers))
        ]


# --- one agreement ------------------------------------------------------------


def _evaluate(
    agreement: Agreement, facts: RecordFacts, sender: str, receiver: str, now: datetime
) -> Flow | _Miss:
    """The first flow of ``agreement`` that allows, or why none does."""
    not_in_force = _validity_miss(agreement, now)
    if not_in_force is not None:
        return not_in_force
    if not agreement.flows:
        return _Miss(
            _FIRST_FLOW_STEP,
            agreement,
            f"{agreement.id}/flows",
            f"{agreement.label} has no flows and allows nothing",
        )

    best: tuple[int, Flow, str] | None = None
    for flow in agreement.flows:
        step, problem = _first_failing(flow, facts, sender, receiver)
        if problem is None:
            return flow
        if best is None or step > best[0]:
            best = (step, flow, problem)
    assert best is not None
    return _flow_miss(agreement, *best, facts=facts, sender=sender, receiver=receiver)


def _validity_miss(agreement: Agreement, now: datetime) -> _Miss | None:
    starts, ends = agreement.starts_at, agreement.ends_at
    if starts is not None and now < starts:
        return _Miss(
            _NOT_IN_FORCE,
            agreement,
            f"{agreement.id}/valid_from",
            f"{agreement.label} is not in force until {agreement.valid_from}",
        )
    if ends is not None and now >= ends:
        return _Miss(
            _NOT_IN_FORCE,
            agreement,
            f"{agreement.id}/valid_until",
            f"{agreement.label} was in force only until {agreement.valid_until}",
        )
    return None


def _first_failing(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> tuple[int, str | None]:
    """(index of the first failing check, its reason), or (n, None) if all hold."""
    for step, (_, check) in enumerate(_CHECKS):
        problem = check(flow, facts, sender, receiver)
        if problem is not None:
            return step, problem
    return len(_CHECKS), None


def _flow_miss(
    agreement: Agreement,
    step: int,
    flow: Flow,
    problem: str,
    *,
    facts: RecordFacts,
    sender: str,
    receiver: str,
) -> _Miss:
    """Word the nearest miss; direction and kind misses concern every flow."""
    key = _CHECKS[step][0]
    closeness = _FIRST_FLOW_STEP + step
    if key in ("from", "to"):
        reason = f"{agreement.label}: no flow goes from {sender} to {receiver}"
        return _Miss(closeness, agreement, f"{agreement.id}/flows", reason)
    if key == "kinds":
        reason = (
            f"{agreement.label}: kind {facts.kind} is not shared by any flow "
            f"from {sender} to {receiver}"
        )
        return _Miss(closeness, agreement, f"{agreement.id}/flows[*].kinds", reason)
    if key == "heat":
        key = "min_views" if flow.min_views is not None else "min_reposts"
    reason = f"{agreement.label} flow '{flow.name}': {problem}"
    return _Miss(
        closeness, agreement, f"{agreement.id}/flows[{flow.index}].{key}", reason
    )


# --- the flow conditions ----------------------------------------------------


def _check_from(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    return None if sender in flow.senders else f"{sender} is not among its senders"


def _check_to(flow: Flow, facts: RecordFacts, sender: str, receiver: str) -> str | None:
    return (
        None if receiver in flow.receivers else f"{receiver} is not among its receivers"
    )


def _check_kind(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    return None if facts.kind in flow.kinds else f"kind {facts.kind} is not shared"


def _check_address(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    if not facts.addressed_to or receiver in facts.addressed_to:
        return None
    return (
        f"the {facts.kind} is addressed to {', '.join(facts.addressed_to)}, "
        f"not to {receiver}"
    )


def _check_category(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    if flow.categories is None or facts.category in flow.categories:
        return None
    allowed = ", ".join(sorted(flow.categories)) or "no category"
    if facts.category is None:
        return f"the category is unknown (its incident is not held); allowed: {allowed}"
    label = CATEGORIES[facts.category][1]
    return f"category {facts.category} ({label}) is not among {allowed}"


def _check_level(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    if flow.levels is None or facts.level in flow.levels:
        return None
    allowed = ", ".join(roman(level) for level in sorted(flow.levels)) or "no level"
    if facts.level is None:
        return f"the level is unknown (its incident is not held); allowed: {allowed}"
    return f"level {LEVEL_LABELS[facts.level]} is not among {allowed}"


def _check_exercise(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    if flow.exercise or not facts.exercise:
        return None
    return "exercise records are not shared by this flow (exercise: false)"


def _check_heat(
    flow: Flow, facts: RecordFacts, sender: str, receiver: str
) -> str | None:
    if not flow.has_heat_condition:
        return None
    if flow.min_views is not None and facts.views >= flow.min_views:
        return None
    if flow.min_reposts is not None and facts.reposts >= flow.min_reposts:
        return None
    below = []
    if flow.min_views is not None:
        below.append(f"{facts.views:,} views < min_views {flow.min_views:,}")
    if flow.min_reposts is not None:
        below.append(f"{facts.reposts:,} reposts < min_reposts {flow.min_reposts:,}")
    return "heat below threshold: " + " and ".join(below)


_CHECKS: tuple[tuple[str, _FlowCheck], ...] = (
    ("from", _check_from),
    ("to", _check_to),
    ("kinds", _check_kind),
    ("addressed_to", _check_address),
    ("categories", _check_category),
    ("levels", _check_level),
    ("exercise", _check_exercise),
    ("heat", _check_heat),
)


# --- decisions ----------------------------------------------------------------


def roman(level: int) -> str:
    """``Ⅲ`` for 3: the numeral that starts the level's label."""
    return LEVEL_LABELS[level].split()[0]


def _allow(
    allowed: list[tuple[Agreement, Flow]], facts: RecordFacts, receiver: str
) -> Decision:
    """The decision under the strictest of the agreements that allow."""

    def withheld(agreement: Agreement) -> tuple[str, ...]:
        return tuple(
            sorted(agreement.withheld_fields(facts.kind, receiver, facts.level))
        )

    def strictness(item: tuple[Agreement, Flow]) -> tuple[int, bool]:
        agreement = item[0]
        return (len(withheld(agreement)), not agreement.onward_sharing)

    # max() keeps the first of equals, and agreements are sorted by id.
    agreement, flow = max(allowed, key=strictness)
    fields = withheld(agreement)
    reason = f"allowed by {agreement.label} flow '{flow.name}'"
    if fields:
        reason += f", withholding {', '.join(fields)}"
    for other, other_flow in allowed:
        if other is agreement:
            continue
        also = f"; {other.label} flow '{other_flow.name}' also allows it"
        if strictness((other, other_flow)) < strictness((agreement, flow)):
            reason += f"{also} but is less strict: the stricter agreement applies"
        else:
            reason += f"{also}, equally strict: the first by id applies"
    return Decision(
        receiver=receiver,
        allowed=True,
        agreement_id=agreement.id,
        agreement_version=agreement.version,
        rule=f"{agreement.id}/{flow.name}",
        reason=reason,
        withheld_fields=fields,
        no_further_sharing=not agreement.onward_sharing,
    )


def _deny_with(miss: _Miss, receiver: str) -> Decision:
    return Decision(
        receiver=receiver,
        allowed=False,
        agreement_id=miss.agreement.id,
        agreement_version=miss.agreement.version,
        rule=miss.rule,
        reason=miss.reason,
    )


def _deny(receiver: str, rule: str, reason: str) -> Decision:
    return Decision(
        receiver=receiver,
        allowed=False,
        agreement_id=None,
        agreement_version=None,
        rule=rule,
        reason=reason,
    )
