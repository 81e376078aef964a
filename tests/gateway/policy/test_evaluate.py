"""Decisions: the shipped agreements' case files, and each rule of evaluation.

Every ``policies/cases/*.yaml`` case is run against the whole shipped folder,
so a new agreement that leaks what another must keep back fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.policy import PolicySet, load_policies
from node.records import RecordFacts

POLICIES = Path(__file__).resolve().parents[3] / "policies"
WritePolicies = Callable[..., Path]

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def _cases() -> list[Any]:
    params = []
    for path in sorted((POLICIES / "cases").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in data["cases"]:
            params.append(
                pytest.param(data, case, id=f"{data['agreement']}: {case['name']}")
            )
    return params


def facts(sender: str, **record: Any) -> RecordFacts:
    record["addressed_to"] = tuple(record.get("addressed_to", ()))
    return RecordFacts(origin=sender, **record)


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policies(POLICIES)


def test_every_agreement_ships_a_case_file(shipped: PolicySet) -> None:
    case_files = {path.stem for path in (POLICIES / "cases").glob("*.yaml")}
    assert {agreement.id for agreement in shipped.agreements} <= case_files


@pytest.mark.parametrize(("suite", "case"), _cases())
def test_case(shipped: PolicySet, suite: dict, case: dict) -> None:
    at = case.get("at", suite.get("at"))
    now = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    decision = shipped.decide(
        facts(case["from"], **case["record"]), case["from"], case["to"], now
    )

    if case["expect"] == "allow":
        assert decision.allowed, decision.reason
        assert decision.agreement_id == suite["agreement"]
        if "withheld" in case:
            assert list(decision.withheld_fields) == case["withheld"]
    else:
        assert case["expect"] == "deny"
        assert not decision.allowed
        assert case["reason"] in decision.reason


def test_decide_all_covers_every_other_node_in_order(shipped: PolicySet) -> None:
    record = facts("CN-HB", kind="incident", category="rumor", level=2)
    decisions = shipped.decide_all(record, "CN-HB", NOW)
    receivers = [decision.receiver for decision in decisions]
    assert receivers == sorted(set(shipped.nodes) - {"CN-HB"})
    allowed = {decision.receiver for decision in decisions if decision.allowed}
    assert allowed == {"CN", "CN-HN", "CN-JX"}


def test_denial_names_the_agreement_version_and_rule(shipped: PolicySet) -> None:
    record = facts("CN-HB", kind="incident", category="rumor", level=4)
    decision = shipped.decide(record, "CN-HB", "CN-HN", NOW)
    assert (decision.agreement_id, decision.agreement_version) == ("central-china", 1)
    assert decision.rule == "central-china/flows[0].levels"
    assert "level Ⅳ 一般" in decision.reason and "Ⅰ, Ⅱ, Ⅲ" in decision.reason


def test_nodes_without_an_agreement_are_told_so(write_policies: WritePolicies) -> None:
    folder = write_policies(
        pair="""
        id: pair
        version: 1
        title: pair
        members: [CN-HB, CN-HN]
        flows: [{name: all, from: members, to: members, kinds: [incident]}]
        """
    )
    policy_set = load_policies(folder)
    decision = policy_set.decide(facts("CN-SH", kind="incident"), "CN-SH", "CN-HB", NOW)
    assert not decision.allowed
    assert decision.rule == "no-common-agreement"
    assert decision.reason == "CN-SH and CN-HB share no agreement"
    assert decision.agreement_id is None


def test_unknown_node_and_self_are_denied(shipped: PolicySet) -> None:
    record = facts("CN-HB", kind="incident", category="rumor", level=1)
    assert shipped.decide(record, "CN-HB", "CN-XX", NOW).rule == "unknown-node"
    assert shipped.decide(record, "CN-HB", "CN-HB", NOW).rule == "same-node"


def test_naive_time_is_refused(shipped: PolicySet) -> None:
    record = facts("CN-HB", kind="incident", category="rumor", level=1)
    with pytest.raises(ValueError):
        shipped.decide(record, "CN-HB", "CN-HN", datetime(2025, 6, 1))


def test_empty_member_list_denies_everyone(write_policies: WritePolicies) -> None:
    folder = write_policies(
        nobody="""
        id: nobody
        version: 1
        title: no members
        members: []
        flows: [{name: all, from: members, to: members, kinds: [incident]}]
        """
    )
    policy_set = load_policies(folder)
    assert any("no members" in warning for warning in policy_set.warnings)
    record = facts("CN-HB", kind="incident", category="rumor", level=1)
    for sender in policy_set.nodes:
        for decision in policy_set.decide_all(record, sender, NOW):
            assert not decision.allowed


def test_empty_kinds_denies(write_policies: WritePolicies) -> None:
    folder = write_policies(
        silent="""
        id: silent
        version: 1
        title: no kinds
        members: [CN-HB, CN-HN]
        flows: [{name: nothing, from: members, to: members, kinds: []}]
        """
    )
    policy_set = load_policies(folder)
    assert any("no kinds" in warning for warning in policy_set.warnings)
    for kind in ("incident", "statement", "joint_request", "notice", "retraction"):
        decision = policy_set.decide(facts("CN-HB", kind=kind), "CN-HB", "CN-HN", NOW)
        assert not decision.allowed
        assert "is not shared by any flow" in decision.reason


def test_agreement_without_flows_denies(write_policies: WritePolicies) -> None:
    folder = write_policies(
        empty="""
        id: empty
        version: 3
        title: no flows
        members: [CN-HB, CN-HN]
        """
    )
    policy_set = load_policies(folder)
    decision = policy_set.decide(facts("CN-HB", kind="incident"), "CN-HB", "CN-HN", NOW)
    assert not decision.allowed
    assert decision.reason == "empty v3 has no flows and allows nothing"


VALIDITY = """
id: dated
version: 2
title: dated
valid_from: 2026-01-01
valid_until: 2026-12-31
members: [CN-HB, CN-HN]
flows: [{name: all, from: members, to: members, kinds: [incident]}]
"""


@pytest.mark.parametrize(
    ("at", "allowed", "reason"),
    [
        (
            "2025-12-31T23:59:59+08:00",
            False,
            "dated v2 is not in force until 2026-01-01",
        ),
        ("2025-12-31T16:00:00+00:00", True, ""),  # 00:00 on 1 January, China time
        ("2026-12-31T23:59:59+08:00", True, ""),
        ("2027-01-01T00:00:00+08:00", False, "in force only until 2026-12-31"),
    ],
)
def test_validity_period_in_china_time(
    write_policies: WritePolicies, at: str, allowed: bool, reason: str
) -> None:
    policy_set = load_policies(write_policies(dated=VALIDITY))
    now = datetime.fromisoformat(at)
    decision = policy_set.decide(facts("CN-HB", kind="incident"), "CN-HB", "CN-HN", now)
    assert decision.allowed is allowed
    assert reason in decision.reason
    if not allowed:
        assert decision.agreement_version == 2
        assert decision.rule.startswith("dated/valid_")


HEAT = """
id: heat
version: 1
title: hot incidents only
members: [CN-HB, CN-HN]
flows:
  - name: hot
    from: members
    to: members
    kinds: [incident, statement]
    min_views: 1000000
    min_reposts: 10000
"""


@pytest.mark.parametrize(
    ("views", "reposts", "allowed"),
    [
        (999_999, 9_999, False),
        (1_000_000, 0, True),
        (0, 10_000, True),
        (5_000_000, 50_000, True),
    ],
)
def test_heat_threshold_applies_once_either_total_crosses(
    write_policies: WritePolicies, views: int, reposts: int, allowed: bool
) -> None:
    policy_set = load_policies(write_policies(heat=HEAT))
    record = facts("CN-HB", kind="incident", views=views, reposts=reposts)
    decision = policy_set.decide(record, "CN-HB", "CN-HN", NOW)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule == "heat/flows[0].min_views"
        assert "999,999 views < min_views 1,000,000" in decision.reason


def test_statement_carries_its_incident_heat(write_policies: WritePolicies) -> None:
    policy_set = load_policies(write_policies(heat=HEAT))
    record = facts("CN-HB", kind="statement", views=2_000_000)
    assert policy_set.decide(record, "CN-HB", "CN-HN", NOW).allowed


def test_flow_without_exercise_refuses_exercises(write_policies: WritePolicies) -> None:
    folder = write_policies(
        real="""
        id: real
        version: 1
        title: real incidents only
        members: [CN-HB, CN-HN]
        flows:
          - {name: real, from: members, to: members, kinds: [incident],
             exercise: false}
        """
    )
    policy_set = load_policies(folder)
    drill = facts("CN-HB", kind="incident", exercise=True)
    decision = policy_set.decide(drill, "CN-HB", "CN-HN", NOW)
    assert not decision.allowed
    assert decision.rule == "real/flows[0].exercise"
    real = facts("CN-HB", kind="incident")
    assert policy_set.decide(real, "CN-HB", "CN-HN", NOW).allowed


def test_direction_is_one_way(shipped: PolicySet) -> None:
    report = facts("CN-SH", kind="incident", category="rumor", level=1)
    assert shipped.decide(report, "CN-SH", "CN", NOW).allowed
    # Down, CN shares only particularly serious (Ⅰ) incidents: a Ⅱ stays up.
    down = facts("CN", kind="incident", category="rumor", level=2)
    assert not shipped.decide(down, "CN", "CN-SH", NOW).allowed


@pytest.mark.parametrize(
    ("addressed_to", "receivers"),
    [
        ((), {"CN-HB", "CN-HN", "CN-JX", "CN-SH", "CN-JS", "CN-GS"}),
        (("CN-GS",), {"CN-GS"}),
        (("CN-HB", "CN-JX"), {"CN-HB", "CN-JX"}),
    ],
)
def test_notice_respects_its_address_list(
    shipped: PolicySet, addressed_to: tuple[str, ...], receivers: set[str]
) -> None:
    notice = facts("CN", kind="notice", addressed_to=addressed_to)
    decisions = shipped.decide_all(notice, "CN", NOW)
    assert {d.receiver for d in decisions if d.allowed} == receivers


def test_request_goes_only_to_its_addressee(shipped: PolicySet) -> None:
    request = facts(
        "CN-HN", kind="joint_request", category="rumor", level=3, addressed_to=["CN-JX"]
    )
    decisions = shipped.decide_all(request, "CN-HN", NOW)
    assert {d.receiver for d in decisions if d.allowed} == {"CN-JX"}
    to_hubei = next(d for d in decisions if d.receiver == "CN-HB")
    assert to_hubei.rule == "central-china/flows[1].addressed_to"


OPEN_PAIR = """
id: a-open
version: 1
title: open
members: [CN-HB, CN-HN]
onward_sharing: true
flows: [{name: everything, from: members, to: members, kinds: [incident]}]
"""
STRICT_PAIR = """
id: b-strict
version: 4
title: strict
members: [CN-HB, CN-HN]
flows: [{name: incidents, from: members, to: members, kinds: [incident]}]
withhold:
  - fields: [incident.entities, incident.platforms]
"""


def test_stricter_agreement_wins_and_says_so(write_policies: WritePolicies) -> None:
    policy_set = load_policies(write_policies(a_open=OPEN_PAIR, b_strict=STRICT_PAIR))
    record = facts("CN-HB", kind="incident", category="rumor", level=1)
    decision = policy_set.decide(record, "CN-HB", "CN-HN", NOW)

    assert decision.allowed
    assert (decision.agreement_id, decision.agreement_version) == ("b-strict", 4)
    assert decision.rule == "b-strict/incidents"
    assert decision.withheld_fields == ("incident.entities", "incident.platforms")
    assert decision.no_further_sharing
    assert "a-open v1 flow 'everything' also allows it" in decision.reason
    assert "is less strict: the stricter agreement applies" in decision.reason


def test_equally_strict_agreements_pick_the_first_by_id(
    write_policies: WritePolicies,
) -> None:
    twin = STRICT_PAIR.replace("id: b-strict", "id: a-twin")
    policy_set = load_policies(write_policies(b_strict=STRICT_PAIR, a_twin=twin))
    decision = policy_set.decide(facts("CN-HB", kind="incident"), "CN-HB", "CN-HN", NOW)
    assert decision.agreement_id == "a-twin"
    assert (
        "b-strict v4 flow 'incidents' also allows it, equally strict" in decision.reason
    )


def test_onward_sharing_is_carried_into_the_decision(
    write_policies: WritePolicies,
) -> None:
    policy_set = load_policies(write_policies(a_open=OPEN_PAIR))
    record = facts("CN-HB", kind="incident")
    assert not policy_set.decide(record, "CN-HB", "CN-HN", NOW).no_further_sharing


@pytest.mark.parametrize(
    ("level", "withheld"),
    [(1, ()), (3, ()), (4, ("incident.entities",)), (None, ("incident.entities",))],
)
def test_withholding_below_a_level(
    write_policies: WritePolicies, level: int | None, withheld: tuple[str, ...]
) -> None:
    folder = write_policies(
        levels="""
        id: levels
        version: 1
        title: names only for serious incidents
        members: [CN-HB, CN-HN, CN-JX]
        flows: [{name: all, from: members, to: members, kinds: [incident]}]
        withhold:
          - {fields: [incident.entities], below_level: 3}
          - {fields: [incident.platforms], to: [CN-JX]}
        """
    )
    policy_set = load_policies(folder)
    record = facts("CN-HB", kind="incident", level=level)
    assert policy_set.decide(record, "CN-HB", "CN-HN", NOW).withheld_fields == withheld
    to_jiangxi = policy_set.decide(record, "CN-HB", "CN-JX", NOW).withheld_fields
    assert to_jiangxi == tuple(sorted({*withheld, "incident.platforms"}))


def test_withheld_fields_only_name_the_records_own_kind(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(
        mixed="""
        id: mixed
        version: 1
        title: mixed
        members: [CN-HB, CN-HN]
        flows: [{name: all, from: members, to: members, kinds: [incident, statement]}]
        withhold: [{fields: [incident.entities, statement.approved_by]}]
        """
    )
    policy_set = load_policies(folder)
    statement = policy_set.decide(
        facts("CN-HB", kind="statement"), "CN-HB", "CN-HN", NOW
    )
    assert statement.withheld_fields == ("statement.approved_by",)


def test_unknown_category_fails_a_category_condition(shipped: PolicySet) -> None:
    orphan = facts("CN-SH", kind="statement")
    decision = shipped.decide(orphan, "CN-SH", "CN-JS", NOW)
    assert not decision.allowed
    assert "category is unknown" in decision.reason


def test_agreement_lookup(shipped: PolicySet) -> None:
    agreement = shipped.agreement("central-china")
    assert agreement is not None and agreement.members == {"CN-HB", "CN-HN", "CN-JX"}
    assert shipped.agreement("nope") is None
