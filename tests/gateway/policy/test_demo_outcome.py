"""The demo's outcome: who receives each record of the sample file.

The table below is written by hand from the agreement texts (issue 2), not
computed: it is the specification the running demo is tested against too.

- central-china: Hubei, Hunan, Jiangxi share incidents of level Ⅰ–Ⅲ in any
  category, their statements, and requests to the member addressed.
- yangtze-delta: Shanghai and Jiangsu share food/drug safety and market
  violations at any level, their statements, and requests to each other.
- national-reporting: every province reports incidents of level Ⅰ–Ⅲ and
  their statements to CN; CN sends notices down.

Exercise records flow like others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.policy import expected_receivers, load_policies
from gateway.policy.outcome import read_jsonl, read_sample

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "examples" / "incidents-2025.jsonl"

EXPECTED: dict[str, set[str]] = {
    # Shanghai, food safety Ⅱ: the bilateral partner and the national office.
    "SH-2025-0315-01": {"CN", "CN-JS"},
    "SH-2025-0315-01-S1": {"CN", "CN-JS"},
    # A request goes to its addressee only; requests are not reported up.
    "SH-2025-0315-01-R1": {"CN-JS"},
    # Gansu is in no regional agreement: level Ⅲ goes to CN only.
    "GS-2025-0312-01": {"CN"},
    # Market violation Ⅳ: Jiangsu (any level) but not CN (Ⅰ–Ⅲ only).
    "SH-2025-04-02": {"CN-JS"},
    "SH-2025-05-11": {"CN", "CN-JS"},
    "SH-2025-06-03": {"CN", "CN-JS"},
    # Hubei exercise, special equipment Ⅱ: both neighbours and CN.
    "HB-DRILL-01": {"CN", "CN-HN", "CN-JX"},
    "HB-DRILL-01-R1": {"CN-HN"},
    # Hunan exercise, rumour Ⅲ, and its statement.
    "HN-DRILL-02": {"CN", "CN-HB", "CN-JX"},
    "HN-DRILL-02-S1": {"CN", "CN-HB", "CN-JX"},
    # Jiangxi exercise, level Ⅳ: no agreement shares it.
    "JX-DRILL-03": set(),
    # Jiangsu exercise, market violation Ⅲ: Shanghai and CN.
    "JS-DRILL-04": {"CN", "CN-SH"},
}


def test_table_covers_every_record_of_the_sample() -> None:
    refs = [line["ref"] for line in read_jsonl(SAMPLE)]
    assert sorted(refs) == sorted(EXPECTED)


def test_receivers_match_the_agreements() -> None:
    policy_set = load_policies(ROOT / "policies")
    assert expected_receivers(SAMPLE, policy_set) == EXPECTED


@pytest.mark.parametrize(
    "at", ["2025-01-01T00:00:00+08:00", "2025-07-15T09:30:00+08:00"]
)
def test_outcome_does_not_depend_on_when_within_the_agreements(at: str) -> None:
    policy_set = load_policies(ROOT / "policies")
    now = datetime.fromisoformat(at)
    assert expected_receivers(SAMPLE, policy_set, now) == EXPECTED


def test_nothing_flows_before_the_agreements_are_in_force() -> None:
    policy_set = load_policies(ROOT / "policies")
    before = datetime(2024, 12, 31, 15, 59, tzinfo=UTC)  # 23:59 China time
    assert all(
        not nodes for nodes in expected_receivers(SAMPLE, policy_set, before).values()
    )


def test_statements_and_requests_carry_their_incidents_facts() -> None:
    samples = {sample.ref: sample for sample in read_sample(read_jsonl(SAMPLE))}
    statement = samples["SH-2025-0315-01-S1"].facts
    assert (statement.kind, statement.category, statement.level) == (
        "statement",
        "food_drug_safety",
        2,
    )
    request = samples["HB-DRILL-01-R1"].facts
    assert request.exercise and request.addressed_to == ("CN-HN",)


def test_ordinary_market_violation_reaches_jiangsu_without_entities() -> None:
    policy_set = load_policies(ROOT / "policies")
    sample = next(
        s for s in read_sample(read_jsonl(SAMPLE)) if s.ref == "SH-2025-04-02"
    )
    decision = policy_set.decide(sample.facts, "CN-SH", "CN-JS", datetime.now(UTC))
    assert decision.withheld_fields == ("incident.entities",)
    assert decision.no_further_sharing
