"""``escalate_overdue_to``: loaded, validated, and warned about when no
agreement lets the escalations through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.policy import check_policies, load_policies

POLICIES = Path(__file__).resolve().parents[3] / "policies"

PAIR = """\
id: pair
version: 1
title: 样例 pair
members: [CN-HB, CN-HN]
escalate_overdue_to: {target}
flows:
  - name: joint-requests
    from: members
    to: members
    kinds: [joint_request, request_update]
"""

UP = """\
id: up
version: 1
title: 报送 up
members: [CN, CN-HB, CN-HN]
flows:
  - name: escalations
    from: [CN-HB{more}]
    to: [CN]
    kinds: [escalation]
"""


def test_the_shipped_central_china_agreement_escalates_overdue_requests_to_cn():
    policy = load_policies(POLICIES)
    assert policy.agreement("central-china").escalate_overdue_to == "CN"
    assert policy.agreement("yangtze-delta").escalate_overdue_to is None


def test_an_unknown_node_is_an_error_naming_file_line_and_key(
    write_policies: Callable[..., Path],
):
    folder = write_policies(pair=PAIR.format(target="CN-XX"))
    check = check_policies(folder)
    assert check.policy_set is None
    [error] = check.errors
    assert error.endswith(
        "pair.yaml:5: escalate_overdue_to: 'CN-XX' is not a known node "
        "(CN, CN-HB, CN-HN, CN-JX, CN-SH, CN-JS, CN-GS)"
    )


def test_members_no_agreement_lets_escalate_to_the_target_are_warned_about(
    write_policies: Callable[..., Path],
):
    folder = write_policies(pair=PAIR.format(target="CN"), up=UP.format(more=""))
    check = check_policies(folder)
    assert check.policy_set is not None
    assert check.policy_set.agreement("pair").escalate_overdue_to == "CN"
    [warning] = [w for w in check.warnings if "escalate_overdue_to" in w]
    assert "pair.yaml:5: escalate_overdue_to: no agreement lets escalations" in warning
    assert "go from CN-HN to CN:" in warning


def test_no_warning_once_every_member_may_escalate(write_policies: Callable[..., Path]):
    folder = write_policies(pair=PAIR.format(target="CN"), up=UP.format(more=", CN-HN"))
    check = check_policies(folder)
    assert not [w for w in check.warnings if "escalate_overdue_to" in w]


def test_leaving_it_out_escalates_nothing(write_policies: Callable[..., Path]):
    folder = write_policies(pair=PAIR.replace("escalate_overdue_to: {target}\n", ""))
    assert load_policies(folder).agreement("pair").escalate_overdue_to is None
