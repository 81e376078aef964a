"""Routing by delivery history, decided against the shipped agreements."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.policy import load_policies
from node.holders import retraction_decisions, with_holders
from node.records import RecordFacts
from node.storage.subjects import Holder
from tests.conftest import POLICIES

NOW = datetime(2025, 7, 1, 8, 0, tzinfo=UTC)
POLICY = load_policies(POLICIES)


def by_node(decisions):
    return {d.receiver: d for d in decisions}


def test_holder_gets_an_update_the_agreements_now_deny_and_others_do_not():
    lowered = RecordFacts(kind="incident", origin="CN-HB", category="rumor", level=4)
    holders = [Holder("CN-HN", 1, "central-china", 1, (), "DELIVERED")]

    decisions = by_node(
        with_holders(POLICY.decide_all(lowered, "CN-HB", NOW), holders, POLICY, lowered)
    )

    hn = decisions["CN-HN"]
    assert hn.allowed and hn.rule == "central-china/held-earlier-version"
    assert hn.reason.startswith(
        "CN-HN holds an earlier version (v1, sent under central-china v1)"
    )
    assert "central-china/flows[0].levels" in hn.reason
    assert not decisions["CN-JX"].allowed and not decisions["CN"].allowed


def test_holder_gets_the_update_under_its_agreements_withholding():
    lowered = RecordFacts(kind="incident", origin="CN-SH", category="rumor", level=4)
    holders = [Holder("CN-JS", 1, "yangtze-delta", 1, (), "DELIVERED")]

    [js] = [
        d for d in with_holders([], holders, POLICY, lowered) if d.receiver == "CN-JS"
    ]

    # yangtze-delta withholds entities below level Ⅲ; the earlier hop did not.
    assert js.allowed and js.withheld_fields == ("incident.entities",)


def test_holder_under_an_agreement_no_longer_loaded_keeps_the_earlier_withholding():
    facts = RecordFacts(kind="incident", origin="CN-SH", level=4)
    holders = [
        Holder("CN-JS", 1, "gone-agreement", 3, ("incident.regions",), "DELIVERED")
    ]

    [js] = with_holders([], holders, POLICY, facts)

    assert (
        js.allowed and js.agreement_id == "gone-agreement" and js.agreement_version == 3
    )
    assert js.withheld_fields == ("incident.regions",)


def test_retraction_goes_to_holders_only_and_says_why_not_to_the_rest():
    facts = RecordFacts(kind="retraction", origin="CN-HB")
    holders = [
        Holder("CN", 2, "national-reporting", 1, (), "DELIVERED"),
        Holder("CN-HN", 2, "central-china", 1, (), "PENDING"),
    ]
    receivers = [node for node in POLICY.nodes if node != "CN-HB"]

    decisions = by_node(
        retraction_decisions(holders, receivers, POLICY, facts, "CN-HB/A")
    )

    assert {n for n, d in decisions.items() if d.allowed} == {"CN", "CN-HN"}
    assert decisions["CN"].agreement_id == "national-reporting"
    assert decisions["CN-JX"].rule == "never-held"
    assert "never received a version of CN-HB/A" in decisions["CN-JX"].reason
    assert set(decisions) == set(receivers)
