"""``guantong show | retract | close | statements search | cases search``
against real nodes."""

from __future__ import annotations

import pytest

from node.cli import main
from tests.conftest import eventually
from tests.helpers import inbox, incident, pending, publish


def run(node, *argv: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main([*argv, "--node-address", node.local_address]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def hubei(federation):
    hb = federation.start("CN-HB", ("CN-HN", "CN"))
    hn = federation.start("CN-HN", ("CN-HB",))
    federation.start("CN", ("CN-HB",))
    return hb, hn


def test_show_on_the_origin_lists_versions_and_where_each_went(hubei, capsys):
    hb, hn = hubei
    publish(hb, incident("HB-1", level=2))
    publish(hb, incident("HB-1", level=4, phase="subsiding"))
    eventually(lambda: len(inbox(hn)) == 2)
    eventually(lambda: pending(hb) == 0)

    lines = run(hb, "show", "HB-1", capsys=capsys)

    assert lines[0] == "CN-HB/HB-1 · incident · 2 version(s), newest v2"
    assert lines[1].startswith("v1 incident (superseded by v2): created ")
    assert lines[1].endswith("by unnamed unit, published here")
    assert "Ⅱ 重大 serious · 发展期 developing · 处置中 open" in lines[3]
    v2 = lines.index(next(line for line in lines if line.startswith("v2 incident:")))
    first, second = lines[:v2], lines[v2:]
    assert any(
        line.startswith("  -> CN-HN: DELIVERED under central-china v1")
        for line in first
    )
    assert any(
        line.startswith("  -> CN-HN: DELIVERED under central-china v1")
        and "holds an earlier version" in line
        for line in second
    )
    assert any(line.startswith("  x  CN-GS: kept back by") for line in second)
    assert "回落期 subsiding" in second[2]


def test_show_on_a_receiver_says_who_delivered_each_version(hubei, capsys):
    hb, hn = hubei
    publish(hb, incident("HB-1", level=2))
    eventually(lambda: inbox(hn))

    lines = run(hn, "show", "HB-1", "--origin", "CN-HB", capsys=capsys)

    assert lines[0] == "CN-HB/HB-1 · incident · 1 version(s), newest v1"
    assert "received from CN-HB at " in lines[1]
    assert not any("->" in line for line in lines)


def test_retract_then_show_marks_the_subject_retracted_everywhere(hubei, capsys):
    hb, hn = hubei
    publish(hb, incident("HB-1", level=2))

    lines = run(hb, "retract", "HB-1", "--reason", "信息不实", capsys=capsys)

    assert lines[0] == "retracted CN-HB/HB-1 at version 2"
    assert any(line.startswith("  -> CN: ") for line in lines)
    assert any(line.startswith("  x  CN-JX: kept back by never-held") for line in lines)
    eventually(lambda: len(inbox(hn)) == 2)
    shown = run(hn, "show", "HB-1", "--origin", "CN-HB", capsys=capsys)
    assert shown[1] == "  已撤回 retracted at v2: 信息不实"
    assert "    撤回 retraction: 信息不实" in shown


def test_statements_and_cases_search_print_labels_and_marks(hubei, capsys):
    hb, hn = hubei
    publish(hb, incident("HB-1", level=2))
    for ref, text, extra in (
        ("HB-1-S1", "涉事食品安全问题正在核查", {}),
        ("HB-1-S2", "涉事食品安全问题已查清", {"supersedes": "HB-1-S1"}),
    ):
        statement = {"ref": ref, "kind": "statement", "incident_ref": "HB-1"}
        publish(hb, {**statement, "text": text, "approved_by": "宣传处", **extra})
    run(hb, "close", "HB-1", "--review", "回应及时，食品安全口径统一", capsys=capsys)
    eventually(lambda: len(inbox(hn)) == 4)

    found = run(
        hn,
        "statements",
        "search",
        "食品安全",
        "--category",
        "food_drug_safety",
        "--since",
        "2020-01-01",
        capsys=capsys,
    )
    none = run(
        hn, "statements", "search", "食品安全", "--until", "2020-01-01", capsys=capsys
    )
    closed = run(hn, "cases", "search", "口径统一", capsys=capsys)

    s1 = next(line for line in found if line.startswith("CN-HB/HB-1-S1 v1"))
    assert "(from CN-HB)" in s1 and "食品药品(医疗器械)安全事故" in s1
    assert s1.endswith("已被替代 superseded by CN-HB/HB-1-S2")
    assert found[-1] == "2 statement(s)"
    assert none == ["0 statement(s)"]
    assert closed[0].startswith("CN-HB/HB-1 v2 (from CN-HB) · closed ")
    assert (
        "已办结 closed" in closed[2]
        and closed[3] == "    复盘 review: 回应及时，食品安全口径统一"
    )
    assert closed[-1] == "1 case(s)"
