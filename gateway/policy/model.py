"""The typed model of sharing agreements, as the loader builds it.

An agreement file (see ``policies/README.md``) becomes one :class:`Agreement`:
its members, a list of named :class:`Flow` rules and the agreement-wide
:class:`WithholdRule` list. Everything here is frozen and already validated:
node ids are known, the word ``members`` is expanded into the member ids, and
field names are qualified by the body they belong to (``incident.entities``).

Two conventions run through the model:

* A condition that is absent (``None``) does not restrict; a condition that is
  present but empty allows nothing. The loader warns about the empty ones.
* Risk levels are numbers, 1 the most serious (Ⅰ 特别重大) and 4 the least
  (Ⅳ 一般). "Less serious than Ⅲ" therefore means a number greater than 3.

The outcome of asking an agreement set about one record is a
:class:`Decision`; :mod:`gateway.policy.evaluate` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

# Agreement dates are calendar days in China Standard Time.
CHINA_TIME = timezone(timedelta(hours=8), "CST")

# In a flow's ``from``/``to``, this word stands for every member.
MEMBERS = "members"


@dataclass(frozen=True)
class NodeInfo:
    """One node of the federation, as ``federation.yaml`` names it."""

    id: str
    name_zh: str
    name_en: str

    @property
    def label(self) -> str:
        """``CN-HB 湖北省市场监督管理局 Hubei ...`` for text staff read."""
        return f"{self.id} {self.name_zh} {self.name_en}"


@dataclass(frozen=True)
class Flow:
    """One direction of sharing within an agreement, and its conditions.

    A flow applies to a record going from ``sender`` to ``receiver`` when the
    sender is in ``senders``, the receiver in ``receivers``, the record's kind
    in ``kinds`` and every condition below holds.
    """

    name: str
    # Position in the agreement file's ``flows`` list, for rule names.
    index: int
    senders: frozenset[str]
    receivers: frozenset[str]
    kinds: frozenset[str]
    # None: any category / any level. Empty: none at all.
    categories: frozenset[str] | None = None
    levels: frozenset[int] | None = None
    # Whether records marked as exercises (演练) may flow.
    exercise: bool = True
    # Heat: the flow applies once the incident's total views reach
    # ``min_views`` or its total reposts reach ``min_reposts``.
    min_views: int | None = None
    min_reposts: int | None = None

    @property
    def has_heat_condition(self) -> bool:
        return self.min_views is not None or self.min_reposts is not None


@dataclass(frozen=True)
class WithholdRule:
    """Fields an agreement keeps back, optionally only in some cases.

    ``fields`` are qualified body field names (``incident.entities``).
    ``below_level``: withheld only when the record's level is less serious
    than this level (its number is greater); a record whose level is unknown
    is treated as less serious, so the field is withheld. ``receivers``:
    withheld only towards these nodes; None means towards every receiver.
    """

    fields: tuple[str, ...]
    below_level: int | None = None
    receivers: frozenset[str] | None = None

    def applies(self, receiver: str, level: int | None) -> bool:
        if self.receivers is not None and receiver not in self.receivers:
            return False
        if self.below_level is None:
            return True
        return level is None or level > self.below_level


@dataclass(frozen=True)
class Agreement:
    """One sharing agreement: who is in it and what flows between them."""

    id: str
    version: int
    title: str
    members: frozenset[str]
    flows: tuple[Flow, ...]
    withhold: tuple[WithholdRule, ...] = ()
    valid_from: date | None = None
    valid_until: date | None = None
    # Whether receivers may pass records on; decisions carry the opposite as
    # ``no_further_sharing``.
    onward_sharing: bool = False
    # Where a joint-handling request sent under this agreement is escalated
    # (提级) by its requester's node when its first report is overdue; None:
    # overdue requests are flagged, not escalated.
    escalate_overdue_to: str | None = None
    # The file it came from, for messages.
    source: str = ""

    @property
    def label(self) -> str:
        """``central-china v1``: how decisions and messages name it."""
        return f"{self.id} v{self.version}"

    @property
    def starts_at(self) -> datetime | None:
        """First instant in force: ``valid_from`` at 00:00 China time."""
        if self.valid_from is None:
            return None
        return datetime.combine(self.valid_from, time(), CHINA_TIME)

    @property
    def ends_at(self) -> datetime | None:
        """First instant no longer in force: the day after ``valid_until``."""
        if self.valid_until is None:
            return None
        day_after = self.valid_until + timedelta(days=1)
        return datetime.combine(day_after, time(), CHINA_TIME)

    def withheld_fields(self, kind: str, receiver: str, level: int | None) -> set[str]:
        """Fields of a ``kind`` record this agreement keeps from ``receiver``."""
        prefix = f"{kind}."
        return {
            name
            for rule in self.withhold
            if rule.applies(receiver, level)
            for name in rule.fields
            if name.startswith(prefix)
        }


@dataclass(frozen=True)
class Decision:
    """Whether one record may go to one receiver, and why.

    ``agreement_id``/``agreement_version`` name the agreement that allowed it,
    or for a denial the agreement that came closest; ``rule`` names the flow
    that allowed it or the condition that kept it back
    (``central-china/flows[0].levels``, ``no-common-agreement``); ``reason``
    says the same in words for staff.
    """

    receiver: str
    allowed: bool
    agreement_id: str | None
    agreement_version: int | None
    rule: str
    reason: str
    withheld_fields: tuple[str, ...] = ()
    no_further_sharing: bool = True
