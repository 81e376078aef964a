"""Joint-handling requests (协作处置): who may do what, from which state.

A request goes from its requester (请求方, the node that published it) to one
handler (承办方, the request's ``to_node``). Each move is a ``request_update``
record sent to the other party, and both nodes keep the request's state.

The state has two parts, and each party changes only its own:

- **handling**, the handler's part: OPEN ─acknowledge→ ACKNOWLEDGED
  ─accept→ ACCEPTED ─report_result→ RESULT_REPORTED; accept straight from
  OPEN; report_progress (速报) keeps it ACCEPTED; decline from OPEN or
  ACKNOWLEDGED → DECLINED.
- **disposition**, the requester's: ACTIVE ─escalate→ ESCALATED, and ACTIVE
  or ESCALATED ─close→ CLOSED.

Why two parts: both nodes hold a copy and both parties act on their own copy.
With one shared state, a result report and an escalation made at the same
moment on the two nodes would cross on the wire; each node would apply the
other's move on top of its own, and one would end RESULT_REPORTED, the other
ESCALATED. With each part written by one party only, and each party's updates
delivered in order, the two moves commute and the copies converge.

Staff read one state (:attr:`RequestState.status`): CLOSED once closed,
ESCALATED while escalated, otherwise the handling state.

Transitions, by role (the table :data:`RULES` is the whole truth):

=========  ======================  ===========================  ===============
role       action                  from                         to
=========  ======================  ===========================  ===============
handler    acknowledge 签收        OPEN                         ACKNOWLEDGED
handler    accept 受理             OPEN, ACKNOWLEDGED           ACCEPTED
handler    decline 拒绝 *          OPEN, ACKNOWLEDGED           DECLINED
handler    report_progress 速报 *  ACCEPTED                     ACCEPTED
handler    report_result 反馈 *    ACCEPTED                     RESULT_REPORTED
requester  escalate 提级 *         ACTIVE, any handling         ESCALATED
requester  close 办结              ACTIVE with RESULT_REPORTED  CLOSED
                                   or DECLINED; ESCALATED
=========  ======================  ===========================  ===============

``*``: the move needs text, a reason or a report.

A request whose incident is retracted (the node holds a retraction as the
incident's newest version) is withdrawn with it: no longer open work, no
deadline, and no move by either party (:class:`RequestWithdrawn`). That is
read from the node's view of the incident, not stored on the request.

Every handler action also needs the request not to be CLOSED. The guards that
look across parts are stable: the handling states close waits for are final
for the handler, so by the time the requester sees one, the handler's node
holds it too. The one crossing the rules cannot reconcile is a handler's
update sent while the requester's close is on its way: the requester refuses
it (the request is closed) and records the refusal, the handler sees its
update dead-lettered with that reason, and both nodes hold the request CLOSED.

This module is pure: no database, no clock. :func:`transition` is what the
node checks before it publishes a move, and what a receiving node checks
against its own copy before it applies one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from node.errors import GuantongError


class Role(Enum):
    REQUESTER = "requester"
    HANDLER = "handler"

    @property
    def label(self) -> str:
        return {Role.REQUESTER: "请求方 requester", Role.HANDLER: "承办方 handler"}[
            self
        ]


class Handling(Enum):
    """The handler's part of a request's state."""

    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    ACCEPTED = "ACCEPTED"
    RESULT_REPORTED = "RESULT_REPORTED"
    DECLINED = "DECLINED"


class Disposition(Enum):
    """The requester's part of a request's state."""

    ACTIVE = "ACTIVE"
    ESCALATED = "ESCALATED"
    CLOSED = "CLOSED"


class Status(Enum):
    """The one state staff read: see :attr:`RequestState.status`."""

    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    ACCEPTED = "ACCEPTED"
    RESULT_REPORTED = "RESULT_REPORTED"
    DECLINED = "DECLINED"
    ESCALATED = "ESCALATED"
    CLOSED = "CLOSED"

    @property
    def label(self) -> str:
        return STATUS_LABELS[self]


STATUS_LABELS: dict[Status, str] = {
    Status.OPEN: "待签收 open",
    Status.ACKNOWLEDGED: "已签收 acknowledged",
    Status.ACCEPTED: "已受理 accepted",
    Status.RESULT_REPORTED: "已反馈结果 result reported",
    Status.DECLINED: "已拒绝 declined",
    Status.ESCALATED: "已提级 escalated",
    Status.CLOSED: "已办结 closed",
}


class Action(Enum):
    ACKNOWLEDGE = "acknowledge"
    ACCEPT = "accept"
    DECLINE = "decline"
    REPORT_PROGRESS = "report_progress"
    REPORT_RESULT = "report_result"
    ESCALATE = "escalate"
    CLOSE = "close"

    @property
    def label(self) -> str:
        return ACTION_LABELS[self]


ACTION_LABELS: dict[Action, str] = {
    Action.ACKNOWLEDGE: "签收 acknowledge",
    Action.ACCEPT: "受理 accept",
    Action.DECLINE: "拒绝 decline",
    Action.REPORT_PROGRESS: "进展速报 report progress",
    Action.REPORT_RESULT: "结果反馈 report the result",
    Action.ESCALATE: "提级 escalate",
    Action.CLOSE: "办结 close",
}


@dataclass(frozen=True)
class RequestState:
    handling: Handling = Handling.OPEN
    disposition: Disposition = Disposition.ACTIVE

    @property
    def status(self) -> Status:
        if self.disposition is Disposition.CLOSED:
            return Status.CLOSED
        if self.disposition is Disposition.ESCALATED:
            return Status.ESCALATED
        return Status[self.handling.value]

    @property
    def label(self) -> str:
        """The shown state, with the handling beside it when the two differ."""
        shown = self.status
        if shown.value == self.handling.value:
            return shown.label
        return f"{shown.label} (handling {Status[self.handling.value].label})"


OPEN_STATE = RequestState()


@dataclass(frozen=True)
class Rule:
    """One way an action is allowed: by ``role``, from these parts, to those."""

    role: Role
    action: Action
    handling_from: frozenset[Handling]
    disposition_from: frozenset[Disposition]
    # None: this part is left as it is.
    handling_to: Handling | None = None
    disposition_to: Disposition | None = None
    # The reason (decline, escalate) or the report (progress, result).
    needs_text: bool = False

    def holds(self, state: RequestState) -> bool:
        return (
            state.handling in self.handling_from
            and state.disposition in self.disposition_from
        )


_ANY_HANDLING = frozenset(Handling)
_NOT_CLOSED = frozenset({Disposition.ACTIVE, Disposition.ESCALATED})
_H = Role.HANDLER
_R = Role.REQUESTER

RULES: tuple[Rule, ...] = (
    Rule(
        _H,
        Action.ACKNOWLEDGE,
        frozenset({Handling.OPEN}),
        _NOT_CLOSED,
        handling_to=Handling.ACKNOWLEDGED,
    ),
    Rule(
        _H,
        Action.ACCEPT,
        frozenset({Handling.OPEN, Handling.ACKNOWLEDGED}),
        _NOT_CLOSED,
        handling_to=Handling.ACCEPTED,
    ),
    Rule(
        _H,
        Action.DECLINE,
        frozenset({Handling.OPEN, Handling.ACKNOWLEDGED}),
        _NOT_CLOSED,
        handling_to=Handling.DECLINED,
        needs_text=True,
    ),
    Rule(
        _H,
        Action.REPORT_PROGRESS,
        frozenset({Handling.ACCEPTED}),
        _NOT_CLOSED,
        handling_to=Handling.ACCEPTED,
        needs_text=True,
    ),
    Rule(
        _H,
        Action.REPORT_RESULT,
        frozenset({Handling.ACCEPTED}),
        _NOT_CLOSED,
        handling_to=Handling.RESULT_REPORTED,
        needs_text=True,
    ),
    Rule(
        _R,
        Action.ESCALATE,
        _ANY_HANDLING,
        frozenset({Disposition.ACTIVE}),
        disposition_to=Disposition.ESCALATED,
        needs_text=True,
    ),
    Rule(
        _R,
        Action.CLOSE,
        frozenset({Handling.RESULT_REPORTED, Handling.DECLINED}),
        frozenset({Disposition.ACTIVE}),
        disposition_to=Disposition.CLOSED,
    ),
    Rule(
        _R,
        Action.CLOSE,
        _ANY_HANDLING,
        frozenset({Disposition.ESCALATED}),
        disposition_to=Disposition.CLOSED,
    ),
)


class Problem(Enum):
    """Why a transition is refused; the local API picks its status code by it."""

    WRONG_PARTY = "wrong_party"
    WRONG_STATE = "wrong_state"
    TEXT_REQUIRED = "text_required"


class IllegalTransition(GuantongError):
    """A move the rules do not allow: by this role, from this state, or without text."""

    def __init__(
        self,
        role: Role,
        state: RequestState,
        action: Action,
        problem: Problem,
        why: str,
        request: str = "",
    ):
        self.role = role
        self.state = state
        self.action = action
        self.problem = problem
        self.why = why
        self.request = request
        about = f"request {request}" if request else "the request"
        super().__init__(
            f"the {role.label} may not {action.label} {about} in state "
            f"{state.status.value} {state.label}: {why}"
        )


class TransitionConflict(IllegalTransition):
    """The request's state changed between reading it and making the move:
    another move won the compare-and-set. ``state`` is the state it is in now."""

    def __init__(
        self,
        role: Role,
        state: RequestState,
        action: Action,
        expected: RequestState,
        request: str = "",
    ):
        self.expected = expected
        super().__init__(
            role,
            state,
            action,
            Problem.WRONG_STATE,
            f"it changed from {expected.status.value} while the move was made; "
            "another move came first",
            request,
        )


WITHDRAWN_LABEL = "事件已撤回 incident retracted"


def withdrawn_label(state: RequestState, reason: str | None) -> str:
    """The shown state of a request withdrawn with its incident."""
    because = f": {reason}" if reason else ""
    return f"{WITHDRAWN_LABEL}{because} (was {state.label})"


class RequestWithdrawn(GuantongError):
    """A move on a request whose incident is retracted: it is no longer open."""

    def __init__(self, request: str, incident: str, action: Action | None = None):
        self.request = request
        self.incident = incident
        self.action = action
        move = f"may not {action.label}" if action else "takes no move on"
        super().__init__(
            f"{WITHDRAWN_LABEL}: {move} request {request}; it is withdrawn, "
            f"its incident {incident} was retracted"
        )


def owner_of(action: Action) -> Role:
    """The one role that may make ``action``."""
    return next(rule.role for rule in RULES if rule.action is action)


def transition(
    state: RequestState, role: Role, action: Action, text: str = "", request: str = ""
) -> RequestState:
    """The state after ``role`` makes ``action``; IllegalTransition if it may not."""
    owner = owner_of(action)
    if role is not owner:
        raise IllegalTransition(
            role,
            state,
            action,
            Problem.WRONG_PARTY,
            f"only the {owner.label} may {action.label}",
            request,
        )

    rule = next(
        (r for r in RULES if r.role is role and r.action is action and r.holds(state)),
        None,
    )
    if rule is None:
        raise IllegalTransition(
            role,
            state,
            action,
            Problem.WRONG_STATE,
            f"{action.value} is allowed only from {_sources(role, action)}",
            request,
        )
    if rule.needs_text and not text.strip():
        raise IllegalTransition(
            role,
            state,
            action,
            Problem.TEXT_REQUIRED,
            f"{action.value} needs {_text_needed(action)}",
            request,
        )
    return RequestState(
        handling=rule.handling_to or state.handling,
        disposition=rule.disposition_to or state.disposition,
    )


def allowed_actions(state: RequestState, role: Role) -> list[Action]:
    """What ``role`` may do next, in the order of :class:`Action`."""
    return [
        action
        for action in Action
        if any(r.role is role and r.action is action and r.holds(state) for r in RULES)
    ]


def owes_first_report(state: RequestState, reported: bool) -> bool:
    """Whether the handler still owes its first fast report (速报).

    The deadline is for the first report: a progress report or the result
    meets it (``reported``), a decline or a close ends it.
    """
    if reported or state.disposition is Disposition.CLOSED:
        return False
    return state.handling in (Handling.OPEN, Handling.ACKNOWLEDGED, Handling.ACCEPTED)


def _text_needed(action: Action) -> str:
    return "a report" if "report" in action.value else "a reason"


def _sources(role: Role, action: Action) -> str:
    """The states a rule allows ``action`` from, in words."""
    parts = []
    for rule in RULES:
        if rule.role is not role or rule.action is not action:
            continue
        handling = (
            "any handling"
            if rule.handling_from == _ANY_HANDLING
            else " or ".join(h.value for h in Handling if h in rule.handling_from)
        )
        disposition = " or ".join(
            d.value for d in Disposition if d in rule.disposition_from
        )
        parts.append(f"{handling} while {disposition}")
    return "; ".join(parts)
