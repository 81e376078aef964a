"""The statement and case libraries between real nodes: supersede marks on the
origin and on receivers, search through the local API on SQLite and
PostgreSQL, closed incidents as cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from guantong.v1 import local_pb2 as api
from guantong.v1 import records_pb2 as pb

from node.records import timestamp
from tests.conftest import eventually
from tests.helpers import incident, local, pending, publish


def statement(ref: str, text: str, **fields) -> dict:
    return {
        "ref": ref,
        "kind": "statement",
        "text": text,
        "approved_by": "上海市局宣传处",
        **fields,
    }


def search(node, text: str = "", **fields) -> list[api.StatementHit]:
    request = api.SearchStatementsRequest(text=text, **fields)
    return list(local(node).SearchStatements(request, timeout=10).statements)


def cases(node, text: str = "") -> list[api.CaseHit]:
    request = api.SearchCasesRequest(text=text)
    return list(local(node).SearchCases(request, timeout=10).cases)


def superseded(node, subject: str) -> str:
    hits = {hit.subject_id: hit for hit in search(node)}
    return hits[subject].superseded_by if subject in hits else "(not held)"


@pytest.fixture
def shanghai(federation):
    sh = federation.start("CN-SH", ("CN-JS", "CN"))
    js = federation.start("CN-JS", ("CN-SH",))
    cn = federation.start("CN", ("CN-SH",))
    publish(sh, incident("SH-1", level=2, category="food_drug_safety"))
    return sh, js, cn


def test_superseded_statement_is_shown_as_such_on_the_origin_and_every_receiver(
    shanghai,
):
    sh, js, cn = shanghai
    publish(sh, statement("SH-1-S1", "已开展现场检查", incident_ref="SH-1"))
    publish(
        sh,
        statement(
            "SH-1-S2",
            "已立案调查，依法从严处理",
            incident_ref="SH-1",
            supersedes="SH-1-S1",
        ),
    )

    for node in (sh, js, cn):
        eventually(
            lambda node=node: superseded(node, "CN-SH/SH-1-S1") == "CN-SH/SH-1-S2"
        )
        assert superseded(node, "CN-SH/SH-1-S2") == ""
    shown = local(js).Show(api.ShowRequest(ref="SH-1-S1", origin="CN-SH"), timeout=10)
    assert shown.superseded_by == "CN-SH/SH-1-S2"
    [hit] = search(js, "立案调查")
    assert hit.received_from == "CN-SH" and hit.category == pb.FOOD_DRUG_SAFETY


def test_statement_search_through_the_local_api_on_postgresql(
    federation, postgres_databases
):
    sh = federation.start("CN-SH", ("CN-JS",))
    js = federation.start("CN-JS", ("CN-SH",), database_url=postgres_databases())
    publish(sh, incident("SH-1", level=3, category="food_drug_safety"))
    publish(
        sh,
        statement(
            "SH-1-S1", "针对涉事食品安全问题，已责令停业整改", incident_ref="SH-1"
        ),
    )
    publish(sh, statement("SH-T1", "网传食品安全信息不实", category="market_violation"))
    eventually(lambda: len(search(js)) == 2)

    today = datetime.now(UTC)
    food = search(js, "食品安全", category=pb.FOOD_DRUG_SAFETY)
    violations = search(js, "食品安全", category=pb.MARKET_VIOLATION)
    recent = search(js, "食品安全", since=timestamp(today - timedelta(hours=1)))
    future = search(js, "食品安全", since=timestamp(today + timedelta(days=1)))
    before = search(js, "食品安全", until=timestamp(today - timedelta(days=1)))

    assert [h.subject_id for h in food] == ["CN-SH/SH-1-S1"]
    assert [h.subject_id for h in violations] == ["CN-SH/SH-T1"]
    assert len(recent) == 2 and future == [] and before == []
    assert search(js, "安全食品") == []


def test_closed_incident_becomes_a_case_on_the_origin_and_its_receivers(shanghai):
    sh, js, cn = shanghai
    review = "首次回应在2小时内发布，涉事食品安全问题已查清，口径统一"
    closed = local(sh).CloseIncident(
        api.CloseIncidentRequest(ref="SH-1", review=review), timeout=10
    )

    assert closed.subject_version == 2
    assert cases(sh, "食品安全 口径统一")[0].incident.status == pb.INCIDENT_CLOSED
    for node in (js, cn):
        [case] = eventually(lambda node=node: cases(node, "口径统一"))
        assert case.subject_id == "CN-SH/SH-1" and case.received_from == "CN-SH"
        assert case.incident.review == review
    assert cases(js, "无关的词") == []
    eventually(lambda: pending(sh) == 0)


@pytest.mark.parametrize(
    ("ref", "review", "field"),
    [("SH-1", " ", "incident.review"), ("NOPE", "复盘", "ref")],
)
def test_closing_needs_a_review_and_an_incident_of_this_node(
    shanghai, ref, review, field
):
    sh, _, _ = shanghai
    with pytest.raises(grpc.RpcError) as refused:
        local(sh).CloseIncident(
            api.CloseIncidentRequest(ref=ref, review=review), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(field)
