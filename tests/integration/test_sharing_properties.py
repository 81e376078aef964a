"""Property: every way a record can reach a peer shares the same records and fields.

For random agreements among CN-HB, CN-HN and CN-JX (members, direction,
kinds, categories, levels, the exercise flag, heat thresholds, withheld
fields) and random incidents published by CN-HB, three deliveries must leave
the receivers holding exactly the same records with exactly the same fields:

(a) live: the receivers are up while CN-HB publishes;
(b) catch-up: the receivers are down while CN-HB publishes, then start;
(c) resend: after (a), the receivers restart on fresh, empty databases and
    CN-HB's admin asks for a resend of everything.

And that common outcome is what the policy engine implies:
``PolicySet.decide`` for each receiver, then ``apply_withholding``, with a
record left without substance not sent at all.

Records are incidents only: a statement whose incident a receiver does not
hold is allowed by the sender and refused by the receiver (see the known gap
in ``gateway/policy/evaluate.py``), so for statements the property does not
hold yet.

Each example runs real nodes over real mTLS on port 0, so examples are few;
they are built inside the test body (the fixtures used are session-scoped).
Shrinking is off: one shrink step costs seconds of node starts, and a
failing example is printed whole, which is readable at this size.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from guantong.v1 import admin_pb2 as admin_api
from guantong.v1 import admin_pb2_grpc as admin_grpc
from guantong.v1 import local_pb2 as local_api
from hypothesis import Phase, event, example, given, settings
from hypothesis import strategies as st

from gateway.policy import apply_withholding, check_policies
from gateway.policy.fields import WITHHOLDABLE
from node.app import Node
from node.record_json import record_from_json
from node.records import CATEGORIES, facts_of
from tests.conftest import POLICIES, Federation, eventually
from tests.helpers import inbox, incident, local, pending, publish

SENDER = "CN-HB"
RECEIVERS = ("CN-HN", "CN-JX")
POOL = (SENDER, *RECEIVERS)
INCIDENT_FIELDS = sorted(f"incident.{name}" for name in WITHHOLDABLE["incident"])

# What a receiver holds: ref -> (record bytes, withheld fields, agreement id, version).
Held = dict[str, tuple[bytes, tuple[str, ...], str, int]]


# --- agreements ----------------------------------------------------------------


def subset(items: tuple[str, ...] | list[str], min_size: int = 0) -> st.SearchStrategy:
    return st.lists(st.sampled_from(items), min_size=min_size, unique=True).map(sorted)


def sometimes(chance_in_4: int) -> st.SearchStrategy[bool]:
    """True in about ``chance_in_4`` of 4 draws, False in the simplest example.

    Conditions are left out more often than not, and the simplest choice of
    every draw is the permissive one, so that most examples share something.
    """
    return st.sampled_from([False] * (4 - chance_in_4) + [True] * chance_in_4)


@st.composite
def direction(draw: st.DrawFn, members: list[str]) -> str | list[str]:
    return draw(subset(members, 1)) if draw(sometimes(1)) else "members"


@st.composite
def flows(draw: st.DrawFn, members: list[str]) -> dict[str, Any]:
    kinds = [["incident"], ["incident", "statement"]] * 2 + [["statement"], []]
    flow: dict[str, Any] = {
        "name": "f",
        "from": draw(direction(members)),
        "to": draw(direction(members)),
        "kinds": draw(st.sampled_from(kinds)),
    }
    if draw(sometimes(1)):
        flow["categories"] = draw(subset(sorted(CATEGORIES), 2))
    if draw(sometimes(1)):
        flow["levels"] = draw(
            st.lists(st.integers(1, 4), min_size=2, unique=True).map(sorted)
        )
    if draw(sometimes(2)):
        flow["exercise"] = draw(st.booleans())
    if draw(sometimes(1)):
        flow["min_views"] = draw(st.sampled_from([0, 1_000, 100_000]))
    if draw(sometimes(1)):
        flow["min_reposts"] = draw(st.sampled_from([100, 10_000]))
    return flow


@st.composite
def agreements(draw: st.DrawFn, index: int) -> dict[str, Any]:
    groups = [list(POOL)] * 3 + [[SENDER, "CN-HN"], [SENDER, "CN-JX"], list(RECEIVERS)]
    members = draw(st.sampled_from(groups))
    agreement_flows = draw(st.lists(flows(members), min_size=1, max_size=2))
    for number, flow in enumerate(agreement_flows):
        flow["name"] = f"flow-{number}"
    # Receivers must see the heat a flow of theirs decides on, so an agreement
    # with a heat condition never withholds the heat figures (the loader
    # refuses it).
    heat = any("min_views" in f or "min_reposts" in f for f in agreement_flows)
    fields = [f for f in INCIDENT_FIELDS if not (heat and f == "incident.platforms")]
    withhold = []
    for _ in range(draw(st.sampled_from([1, 0, 1, 2]))):
        rule: dict[str, Any] = {"fields": draw(subset(fields, 1))}
        if draw(st.booleans()):
            rule["below_level"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            rule["to"] = draw(subset(members, 1))
        withhold.append(rule)
    agreement = {
        "id": f"agreement-{index}",
        "version": draw(st.integers(1, 5)),
        "title": f"random agreement {index}",
        "members": members,
        "flows": agreement_flows,
    }
    if withhold:
        agreement["withhold"] = withhold
    return agreement


agreement_sets = st.integers(1, 2).flatmap(
    lambda count: st.tuples(*(agreements(i) for i in range(count)))
)


# --- records -------------------------------------------------------------------


@st.composite
def incidents(draw: st.DrawFn, index: int) -> dict[str, Any]:
    platforms = [
        {
            "name": "微博",
            "views": draw(st.sampled_from([0, 999, 1_000, 250_000])),
            "reposts": draw(st.sampled_from([0, 99, 10_000])),
            "comments": 3,
        }
    ]
    fields: dict[str, Any] = {
        "exercise": draw(st.booleans()),
        "platforms": platforms,
    }
    if draw(st.booleans()):
        fields["summary"] = ""  # then withholding the title leaves nothing
    if draw(st.booleans()):
        fields["entities"] = []
    return incident(
        f"HB-{index:02d}",
        level=draw(st.integers(1, 4)),
        category=draw(st.sampled_from(sorted(CATEGORIES))),
        **fields,
    )


record_lists = st.integers(1, 6).flatmap(
    lambda count: st.tuples(*(incidents(i) for i in range(count)))
)


# --- running the three paths ---------------------------------------------------


def write_policies(folder: Path, agreement_data: tuple[dict[str, Any], ...]) -> None:
    folder.mkdir()
    shutil.copy(POLICIES / "federation.yaml", folder / "federation.yaml")
    for data in agreement_data:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        (folder / f"{data['id']}.yaml").write_text(text, encoding="utf-8")


def held(federation: Federation) -> dict[str, Held]:
    """What each receiver holds, once CN-HB has nothing left to send."""
    eventually(lambda: pending(federation.nodes[SENDER]) == 0)
    return {
        receiver: {
            m.envelope.ref: (
                m.record.SerializeToString(deterministic=True),
                tuple(m.envelope.withheld_fields),
                m.envelope.agreement_id,
                m.envelope.agreement_version,
            )
            for m in inbox(federation.nodes[receiver])
        }
        for receiver in RECEIVERS
    }


def live_then_resend(
    federation: Federation, records: tuple[dict[str, Any], ...]
) -> tuple[dict[str, Held], dict[str, Held]]:
    for receiver in RECEIVERS:
        federation.start(receiver, (SENDER,))
    hb = federation.start(SENDER, RECEIVERS)
    for data in records:
        publish(hb, data)
    live = held(federation)

    # The receivers lose their databases and come back empty.
    for receiver in RECEIVERS:
        federation.stop(receiver)
        fresh = federation.root / f"{receiver}-restored.db"
        federation.database_urls[receiver] = f"sqlite:///{fresh}"
        federation.start(receiver, (SENDER,))
        assert inbox(federation.nodes[receiver]) == []
    admin = admin_grpc.AdminStub(grpc.insecure_channel(hb.local_address))
    for receiver in RECEIVERS:
        admin.Resend(admin_api.ResendRequest(peer=receiver), timeout=10)
    return live, held(federation)


def catch_up(
    federation: Federation, records: tuple[dict[str, Any], ...]
) -> dict[str, Held]:
    hb = federation.start(SENDER, RECEIVERS)
    for data in records:
        publish(hb, data)
    assert pending(hb) == sum(len(v) for v in expected_held(hb, records).values())
    for receiver in RECEIVERS:
        federation.start(receiver, (SENDER,))
    return held(federation)


def expected_held(hb: Node, records: tuple[dict[str, Any], ...]) -> dict[str, Held]:
    """What the policy engine says each receiver should hold."""
    policy_set = hb.policies.current
    now = hb.clock.now()
    expected: dict[str, Held] = {receiver: {} for receiver in RECEIVERS}
    for data in records:
        ref, record = record_from_json(data, SENDER)
        facts = facts_of(record, SENDER)
        for receiver in RECEIVERS:
            decision = policy_set.decide(facts, SENDER, receiver, now)
            if not decision.allowed:
                continue
            kept = apply_withholding(record, decision.withheld_fields)
            if kept is None:
                continue
            expected[receiver][ref] = (
                kept.SerializeToString(deterministic=True),
                decision.withheld_fields,
                decision.agreement_id or "",
                decision.agreement_version or 0,
            )
    return expected


# --- the property --------------------------------------------------------------

OVERLAP_EXAMPLE = (
    (
        {
            "id": "agreement-0",
            "version": 3,
            "title": "wide",
            "members": ["CN-HB", "CN-HN", "CN-JX"],
            "flows": [
                {
                    "name": "flow-0",
                    "from": "members",
                    "to": "members",
                    "kinds": ["incident"],
                    "min_views": 1_000,
                },
            ],
            "withhold": [{"fields": ["incident.title"], "to": ["CN-JX"]}],
        },
        {
            "id": "agreement-1",
            "version": 1,
            "title": "narrow",
            "members": ["CN-HB", "CN-HN"],
            "flows": [
                {
                    "name": "flow-0",
                    "from": ["CN-HB"],
                    "to": ["CN-HN"],
                    "kinds": ["incident"],
                    "levels": [1, 2],
                },
            ],
            "withhold": [
                {
                    "fields": ["incident.entities", "incident.platforms"],
                    "below_level": 1,
                },
            ],
        },
    ),
    (
        incident("HB-00", level=2, summary=""),
        incident("HB-01", level=1),
        incident("HB-02", level=4, platforms=[{"name": "微博", "views": 10}]),
    ),
)


@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@example(*OVERLAP_EXAMPLE)
@given(agreement_data=agreement_sets, records=record_lists)
def test_live_catch_up_and_resend_share_what_the_policy_engine_implies(
    certs, tmp_path_factory, agreement_data, records
):
    root = tmp_path_factory.mktemp("sharing")
    policies = root / "policies"
    write_policies(policies, agreement_data)
    assert check_policies(policies).errors == []

    first = Federation(certs, root / "live", policies)
    try:
        live, resent = live_then_resend(first, records)
        expected = expected_held(first.nodes[SENDER], records)
    finally:
        first.stop_all()
    second = Federation(certs, root / "catch-up", policies)
    try:
        caught_up = catch_up(second, records)
    finally:
        second.stop_all()

    # Shown by --hypothesis-show-statistics: how much the examples exercised.
    deliveries = [item for by_ref in expected.values() for item in by_ref.values()]
    event(f"deliveries: {min(len(deliveries), 4)}{'+' if len(deliveries) >= 4 else ''}")
    event(f"with withheld fields: {any(item[1] for item in deliveries)}")
    assert live == expected
    assert caught_up == expected
    assert resent == expected


@pytest.mark.xfail(
    strict=True,
    reason="known gap (gateway/policy/evaluate.py): the sender judges a statement "
    "by an incident the receiver never got, and the receiver refuses it",
)
def test_statement_whose_incident_never_reached_the_receiver_is_not_sent(
    federation, policies_copy
):
    central = policies_copy / "central-china.yaml"
    text = central.read_text(encoding="utf-8")
    central.write_text(text.replace("[incident, statement]", "[statement]"), "utf-8")
    federation.policies = policies_copy
    hn = federation.start("CN-HN", ("CN-HB",))
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("INC", level=2))
    _, statement = record_from_json(
        {
            "ref": "S1",
            "kind": "statement",
            "incident_ref": "INC",
            "text": "正在核查。",
            "approved_by": "新闻宣传处",
        },
        SENDER,
    )
    local(hb).Publish(local_api.PublishRequest(ref="S1", record=statement), timeout=5)
    eventually(lambda: pending(hb) == 0)

    assert inbox(hn) == []
    [peer] = local(hb).Status(local_api.StatusRequest(), timeout=5).peers
    assert peer.dead_letters == 0, "queued for CN-HN, then refused there"
