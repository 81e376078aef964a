"""The statement and case libraries on both databases: Chinese substring
search, category and date filters, supersede marks, cases from closed
incidents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from guantong.v1 import records_pb2 as pb

from node import lifecycle
from node.appliers import Appliers
from node.envelopes import log_entry_for, seal
from node.record_json import record_from_json
from node.records import kind_of, subject_id
from node.storage import Store
from node.storage.library import Library, search_terms
from tests.helpers import incident

DAY_1 = datetime(2025, 7, 1, 2, 0, tzinfo=UTC)
DAY_2 = DAY_1 + timedelta(days=1)
DAY_3 = DAY_1 + timedelta(days=2)


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def appliers() -> Appliers:
    appliers = Appliers()
    lifecycle.register(appliers)
    return appliers


class Node:
    """Stores records as a node would: published here or received from a peer."""

    def __init__(self, store: Store, appliers: Appliers):
        self.store = store
        self.appliers = appliers
        self.library = Library(store)

    def put(
        self,
        origin: str,
        data: dict[str, Any],
        version: int = 1,
        at: datetime = DAY_1,
        received_from: str | None = None,
    ) -> None:
        ref, record = record_from_json(data, origin)
        self.put_record(origin, ref, record, version, at, received_from)

    def put_record(
        self,
        origin: str,
        ref: str,
        record: pb.Record,
        version: int = 1,
        at: datetime = DAY_1,
        received_from: str | None = None,
    ) -> None:
        envelope = seal(
            message_id=uuid.uuid4().hex,
            origin=origin,
            author_unit="",
            created_at=at,
            subject_id=subject_id(origin, ref),
            subject_version=version,
            ref=ref,
            record=record,
            exercise=False,
        )
        entry = log_entry_for(envelope, kind_of(record))
        if received_from is None:
            hook = self.appliers.hook(None)
            self.store.append_published(entry, [], [], at, apply=hook)
        else:
            hook = self.appliers.hook(received_from)
            self.store.append_received([entry], received_from, at, apply=hook)

    def statements(self, text: str = "", **filters: Any) -> list[str]:
        found = self.library.search_statements(search_terms(text), **filters)
        return [hit.subject_id for hit in found]

    def cases(self, text: str = "", **filters: Any) -> list[str]:
        return [
            hit.subject_id
            for hit in self.library.search_cases(search_terms(text), **filters)
        ]


@pytest.fixture
def node(store: Store, appliers: Appliers) -> Node:
    return Node(store, appliers)


def statement(ref: str, text: str, **fields: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "kind": "statement",
        "text": text,
        "approved_by": "新闻宣传处",
        **fields,
    }


def test_chinese_term_is_found_inside_a_longer_phrase_without_segmentation(node):
    node.put(
        "CN-SH", statement("S1", "针对涉事食品安全问题，市场监管部门已开展现场检查。")
    )
    node.put("CN-SH", statement("S2", "特种设备检验工作正常开展。"))

    assert node.statements("食品安全") == ["CN-SH/S1"]
    assert node.statements("涉事食品") == ["CN-SH/S1"]
    assert node.statements("安全食品") == []
    # Every term must occur.
    assert node.statements("食品安全 现场检查") == ["CN-SH/S1"]
    assert node.statements("食品安全 特种设备") == []


def test_search_covers_own_and_received_statements_and_keywords(node):
    node.put("CN-SH", statement("S1", "涉事门店已停业整改。"))
    node.put(
        "CN-JS",
        statement(
            "T1", "请以官方通报为准。", category="rumor", keywords=["食品安全谣言"]
        ),
        received_from="CN-JS",
    )

    hits = node.library.search_statements(search_terms("食品安全"))

    assert [(h.subject_id, h.received_from) for h in hits] == [("CN-JS/T1", "CN-JS")]
    assert node.statements("停业") == ["CN-SH/S1"]


def test_full_width_letters_case_and_wildcards_are_matched_literally(node):
    node.put("CN-SH", statement("S1", "ＡＰＰ平台100%下架涉事商品"))
    node.put("CN-SH", statement("S2", "平台已下架涉事商品"))

    assert node.statements("app平台") == ["CN-SH/S1"]
    assert node.statements("100%") == ["CN-SH/S1"]
    assert node.statements("%") == ["CN-SH/S1"]
    assert node.statements("_") == []


def test_category_is_the_topics_or_the_incidents(node):
    node.put("CN-SH", incident("I-1", category="food_drug_safety"))
    node.put("CN-SH", statement("S1", "食品安全口径", incident_ref="I-1"))
    node.put("CN-SH", statement("T1", "食品安全谣言澄清", category="rumor"))
    node.put("CN-SH", statement("N1", "食品安全一般口径"))

    assert node.statements("食品安全", category="food_drug_safety") == ["CN-SH/S1"]
    assert node.statements("食品安全", category="rumor") == ["CN-SH/T1"]
    assert node.statements("", category="special_equipment") == []


def test_incident_statement_follows_its_incidents_newest_category(node):
    node.put("CN-SH", incident("I-1", category="food_drug_safety"))
    node.put("CN-SH", statement("S1", "口径", incident_ref="I-1"))
    node.put("CN-SH", incident("I-1", category="rumor"), version=2)

    assert node.statements(category="rumor") == ["CN-SH/S1"]
    assert node.statements(category="food_drug_safety") == []


def test_date_range_includes_since_and_excludes_until(node):
    node.put("CN-SH", statement("S1", "食品安全口径一"), at=DAY_1)
    node.put("CN-SH", statement("S2", "食品安全口径二"), at=DAY_2)
    node.put("CN-SH", statement("S3", "食品安全口径三"), at=DAY_3)

    assert node.statements("食品安全", since=DAY_2) == ["CN-SH/S3", "CN-SH/S2"]
    assert node.statements("食品安全", until=DAY_2) == ["CN-SH/S1"]
    assert node.statements("食品安全", since=DAY_2, until=DAY_3) == ["CN-SH/S2"]


def test_newest_version_of_a_statement_is_what_is_searched(node):
    node.put("CN-SH", statement("S1", "初版口径：正在核查"))
    node.put("CN-SH", statement("S1", "更新口径：已立案调查"), version=2)

    [hit] = node.library.search_statements(search_terms("口径"))
    assert hit.version == 2
    assert node.statements("正在核查") == []
    assert node.statements("立案调查") == ["CN-SH/S1"]


@pytest.mark.parametrize("replacement_first", [False, True])
def test_superseded_statement_is_marked_whichever_arrives_first(
    node, replacement_first
):
    old = statement("S1", "旧口径")
    new = statement("S2", "新口径", supersedes="S1")
    for data in (new, old) if replacement_first else (old, new):
        node.put("CN-SH", data, received_from="CN-SH")

    assert node.library.superseded_by("CN-SH/S1") == "CN-SH/S2"
    assert node.library.superseded_by("CN-SH/S2") is None
    [hit] = node.library.search_statements(search_terms("旧口径"))
    assert hit.superseded_by == "CN-SH/S2"


def test_statement_cannot_supersede_another_origins_statement(node):
    node.put("CN-SH", statement("S1", "上海口径"), received_from="CN-SH")
    ref, claim = record_from_json(statement("S9", "江苏口径"), "CN-JS")
    claim.statement.supersedes = "CN-SH/S1"
    node.put_record("CN-JS", ref, claim, received_from="CN-JS")

    assert node.library.superseded_by("CN-SH/S1") is None
    assert node.statements("江苏口径") == ["CN-JS/S9"]


def test_closed_incident_is_a_case_searchable_by_its_review(node):
    node.put("CN-SH", incident("I-1", title="会员店食品中发现异物"))
    node.put("CN-SH", incident("I-2", title="另一起事件"))
    assert node.cases("异物") == []

    closed = incident(
        "I-1",
        title="会员店食品中发现异物",
        status="closed",
        review="首发回应及时，涉事食品安全问题已查清",
    )
    node.put("CN-SH", closed, version=2, at=DAY_2)

    assert node.cases("食品安全") == ["CN-SH/I-1"]
    assert node.cases("异物") == ["CN-SH/I-1"]
    assert node.cases("首发回应") == ["CN-SH/I-1"]
    assert node.cases("食品安全", category="rumor") == []
    [case] = node.library.search_cases(search_terms("首发"))
    assert (case.version, case.at) == (2, DAY_2)


def test_reopened_incident_is_no_longer_a_case(node):
    node.put(
        "CN-SH", incident("I-1", status="closed", review="复盘"), received_from="CN-SH"
    )
    node.put("CN-SH", incident("I-1"), version=2, received_from="CN-SH")
    assert node.cases() == []
