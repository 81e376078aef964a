"""The request state machine, exhaustively: every (role, action, state) is
either in the hand-written table of legal moves below, or refused with an
error naming the role, the state and the action."""

from __future__ import annotations

import itertools

import pytest

from node.workflow.requests import (
    OPEN_STATE,
    Action,
    Disposition,
    Handling,
    IllegalTransition,
    Problem,
    RequestState,
    Role,
    Status,
    allowed_actions,
    owes_first_report,
    transition,
)

H, D = Handling, Disposition
R, HD = Role.REQUESTER, Role.HANDLER
ACTIVE, ESCALATED, CLOSED = D.ACTIVE, D.ESCALATED, D.CLOSED

# (role, action, handling, disposition) -> (handling, disposition) after it.
# Written from the issue, not from the module's table.
LEGAL: dict[
    tuple[Role, Action, Handling, Disposition], tuple[Handling, Disposition]
] = {}
for disposition in (ACTIVE, ESCALATED):
    LEGAL |= {
        (HD, Action.ACKNOWLEDGE, H.OPEN, disposition): (H.ACKNOWLEDGED, disposition),
        (HD, Action.ACCEPT, H.OPEN, disposition): (H.ACCEPTED, disposition),
        (HD, Action.ACCEPT, H.ACKNOWLEDGED, disposition): (H.ACCEPTED, disposition),
        (HD, Action.DECLINE, H.OPEN, disposition): (H.DECLINED, disposition),
        (HD, Action.DECLINE, H.ACKNOWLEDGED, disposition): (H.DECLINED, disposition),
        (HD, Action.REPORT_PROGRESS, H.ACCEPTED, disposition): (
            H.ACCEPTED,
            disposition,
        ),
        (HD, Action.REPORT_RESULT, H.ACCEPTED, disposition): (
            H.RESULT_REPORTED,
            disposition,
        ),
    }
for handling in Handling:
    LEGAL[(R, Action.ESCALATE, handling, ACTIVE)] = (handling, ESCALATED)
    LEGAL[(R, Action.CLOSE, handling, ESCALATED)] = (handling, CLOSED)
LEGAL[(R, Action.CLOSE, H.RESULT_REPORTED, ACTIVE)] = (H.RESULT_REPORTED, CLOSED)
LEGAL[(R, Action.CLOSE, H.DECLINED, ACTIVE)] = (H.DECLINED, CLOSED)

EVERY_MOVE = list(itertools.product(Role, Action, Handling, Disposition))
ILLEGAL = [move for move in EVERY_MOVE if move not in LEGAL]
HANDLER_ACTIONS = {
    Action.ACKNOWLEDGE,
    Action.ACCEPT,
    Action.DECLINE,
    Action.REPORT_PROGRESS,
    Action.REPORT_RESULT,
}


def _id(move) -> str:  # type: ignore[no-untyped-def]
    role, action, handling, disposition = move
    return f"{role.value}-{action.value}-{handling.value}-{disposition.value}"


@pytest.mark.parametrize("move", list(LEGAL), ids=_id)
def test_legal_move_reaches_the_expected_state(move):
    role, action, handling, disposition = move
    after = transition(RequestState(handling, disposition), role, action, text="说明")
    assert (after.handling, after.disposition) == LEGAL[move]


@pytest.mark.parametrize("move", ILLEGAL, ids=_id)
def test_illegal_move_is_refused_naming_role_state_and_action(move):
    role, action, handling, disposition = move
    state = RequestState(handling, disposition)
    with pytest.raises(IllegalTransition) as refused:
        transition(state, role, action, text="说明", request="CN-HB/R1")

    error = refused.value
    assert (error.role, error.state, error.action) == (role, state, action)
    message = str(error)
    assert role.label in message
    assert action.label in message
    assert state.status.value in message
    assert "CN-HB/R1" in message
    wrong_party = (action in HANDLER_ACTIONS) != (role is HD)
    assert error.problem is (
        Problem.WRONG_PARTY if wrong_party else Problem.WRONG_STATE
    )


def test_the_table_covers_every_move_once():
    assert len(LEGAL) + len(ILLEGAL) == len(Role) * len(Action) * len(Handling) * len(D)


@pytest.mark.parametrize(
    "action", [Action.DECLINE, Action.REPORT_PROGRESS, Action.REPORT_RESULT]
)
def test_handler_moves_that_carry_a_reason_or_report_need_text(action):
    state = RequestState(H.ACCEPTED if "report" in action.value else H.OPEN)
    with pytest.raises(IllegalTransition) as refused:
        transition(state, HD, action, text="  ")
    assert refused.value.problem is Problem.TEXT_REQUIRED


def test_escalation_needs_a_reason():
    with pytest.raises(IllegalTransition) as refused:
        transition(OPEN_STATE, R, Action.ESCALATE)
    assert refused.value.problem is Problem.TEXT_REQUIRED
    assert "reason" in str(refused.value)


@pytest.mark.parametrize("action", [Action.ACKNOWLEDGE, Action.ACCEPT, Action.CLOSE])
def test_other_moves_need_no_text(action):
    state = RequestState(H.OPEN, ESCALATED) if action is Action.CLOSE else OPEN_STATE
    role = R if action is Action.CLOSE else HD
    transition(state, role, action)


def test_wrong_party_is_named_before_the_state():
    with pytest.raises(IllegalTransition) as refused:
        transition(RequestState(H.RESULT_REPORTED), HD, Action.CLOSE)
    assert "only the 请求方 requester may 办结 close" in str(refused.value)


def test_shown_state_is_closed_then_escalated_then_handling():
    assert RequestState(H.ACCEPTED, CLOSED).status is Status.CLOSED
    assert RequestState(H.ACCEPTED, ESCALATED).status is Status.ESCALATED
    assert RequestState(H.ACCEPTED, ACTIVE).status is Status.ACCEPTED
    assert (
        RequestState(H.ACCEPTED, ESCALATED).label
        == "已提级 escalated (handling 已受理 accepted)"
    )
    assert OPEN_STATE.label == "待签收 open"


def test_moves_by_the_two_parties_commute():
    """Both nodes end in the same state whichever party's move they apply first."""
    for (role_a, action_a, handling, disposition), _ in LEGAL.items():
        for role_b, action_b, handling_b, disposition_b in LEGAL:
            if role_b is role_a or (handling_b, disposition_b) != (
                handling,
                disposition,
            ):
                continue
            start = RequestState(handling, disposition)
            a_then_b = _try(_try(start, role_a, action_a), role_b, action_b)
            b_then_a = _try(_try(start, role_b, action_b), role_a, action_a)
            if a_then_b is None or b_then_a is None:
                # Only a handler's move crossing the requester's close is refused.
                assert {action_a, action_b} & {Action.CLOSE}
                continue
            assert a_then_b == b_then_a


def _try(state, role, action):  # type: ignore[no-untyped-def]
    if state is None:
        return None
    try:
        return transition(state, role, action, text="说明")
    except IllegalTransition:
        return None


def test_allowed_actions_list_what_each_party_may_do_next():
    assert allowed_actions(OPEN_STATE, HD) == [
        Action.ACKNOWLEDGE,
        Action.ACCEPT,
        Action.DECLINE,
    ]
    assert allowed_actions(OPEN_STATE, R) == [Action.ESCALATE]
    assert allowed_actions(RequestState(H.RESULT_REPORTED), R) == [
        Action.ESCALATE,
        Action.CLOSE,
    ]
    assert allowed_actions(RequestState(H.ACCEPTED, CLOSED), HD) == []


def test_first_report_is_owed_until_a_report_a_decline_or_a_close():
    assert owes_first_report(OPEN_STATE, reported=False)
    assert owes_first_report(RequestState(H.ACCEPTED, ESCALATED), reported=False)
    assert not owes_first_report(RequestState(H.ACCEPTED), reported=True)
    assert not owes_first_report(RequestState(H.DECLINED), reported=False)
    assert not owes_first_report(RequestState(H.ACKNOWLEDGED, CLOSED), reported=False)
