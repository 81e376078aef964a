"""``guantong requests | notices | escalate | escalations`` against real nodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from node.cli import main
from node.clock import FakeClock
from tests.conftest import eventually
from tests.helpers import incident, publish
from tests.workflow_helpers import request_record, state_of

REQUEST = "CN-HB/HB-1-R1"


def run(node, *argv: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main([*argv, "--node-address", node.local_address]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 7, 1, 8, tzinfo=UTC))


@pytest.fixture
def nodes(federation, clock):
    cn = federation.start("CN", ("CN-HB", "CN-HN"), clock=clock)
    hn = federation.start("CN-HN", ("CN-HB", "CN"), clock=clock)
    hb = federation.start("CN-HB", ("CN-HN", "CN"), clock=clock)
    return cn, hb, hn


def test_requests_list_shows_both_sides_with_time_left(nodes, clock, capsys):
    _, hb, hn = nodes
    publish(hb, incident("HB-1", level=3, exercise=True))
    publish(hb, request_record("HB-1", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")
    clock.advance(timedelta(minutes=35))

    sent = run(hb, "requests", "list", capsys=capsys)
    received = run(hn, "requests", "list", capsys=capsys)

    assert sent[0] == f"{REQUEST}  发出 sent -> CN-HN  待签收 open [演练 exercise]"
    assert (
        received[0] == f"{REQUEST}  收到 received <- CN-HB  待签收 open [演练 exercise]"
    )
    assert "事件 incident CN-HB/HB-1: 事件 HB-1 · Ⅲ 较大 relatively serious" in sent[1]
    for lines in (sent, received):
        assert lines[3] == (
            "    时限 due 2025-07-01 18:00 (UTC+8) · 剩余 time left 1 h 25 min"
        )
        assert lines[-1] == "1 request(s); node time 2025-07-01 16:35 (UTC+8)"
    assert sent[4] == "    next: 提级 escalate"
    assert received[4] == "    next: 签收 acknowledge, 受理 accept, 拒绝 decline"

    clock.advance(timedelta(hours=2))
    overdue = run(hn, "requests", "list", capsys=capsys)
    assert overdue[3].endswith("逾期 OVERDUE by 35 min")


def test_a_request_moves_through_the_cli(nodes, capsys):
    _, hb, hn = nodes
    publish(hb, incident("HB-1", level=2))
    publish(hb, request_record("HB-1", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")

    acked = run(hn, "requests", "ack", "HB-1-R1", capsys=capsys)
    assert acked[0] == f"{REQUEST}: 签收 acknowledge -> 已签收 acknowledged"
    assert (
        "  -> CN-HB: PENDING under central-china v1 (central-china/joint-requests)"
        in acked
    )
    run(hn, "requests", "accept", REQUEST, "--note", "已安排", capsys=capsys)
    run(hn, "requests", "report", REQUEST, "--progress", "已到场", capsys=capsys)
    run(hn, "requests", "report", REQUEST, "--result", "资质齐全", capsys=capsys)
    eventually(lambda: state_of(hb, REQUEST) == "RESULT_REPORTED")
    closed = run(hb, "requests", "close", "HB-1-R1", capsys=capsys)
    assert closed[0].startswith(f"{REQUEST}: 办结 close -> 已办结 closed")
    eventually(lambda: state_of(hn, REQUEST) == "CLOSED")

    assert run(hn, "requests", "list", capsys=capsys) == [
        "0 request(s); node time 2025-07-01 16:00 (UTC+8)"
    ]
    everything = run(hn, "requests", "list", "--all", capsys=capsys)
    assert "    结果 result: 资质齐全" in everything


def test_a_refused_move_says_why(nodes, capsys):
    _, hb, hn = nodes
    publish(hb, incident("HB-1", level=2))
    publish(hb, request_record("HB-1", "CN-HN"))
    eventually(lambda: state_of(hn, REQUEST) == "OPEN")
    address = ["--node-address", hn.local_address]

    assert main(["requests", "close", REQUEST, *address]) == 2
    error = capsys.readouterr().err
    assert error.startswith("guantong: PERMISSION_DENIED: the 承办方 handler may not")
    assert main(["requests", "decline", REQUEST, "--reason", "无管辖权", *address]) == 0


def test_notices_and_escalations_through_the_cli(nodes, capsys):
    cn, hb, hn = nodes
    run(
        cn,
        "notices",
        "send",
        "--title",
        "汛期通报",
        "--to",
        "CN-HB",
        "--to",
        "CN-HN",
        "--ref",
        "TB-1",
        capsys=capsys,
    )
    eventually(
        lambda: run(hb, "notices", "list", capsys=capsys)[0].startswith("CN/TB-1")
    )
    run(hb, "notices", "ack", "TB-1", "--note", "已部署", capsys=capsys)

    def cn_sees_the_acknowledgement() -> list[str] | None:
        lines = run(cn, "notices", "list", capsys=capsys)
        return lines if "CN-HB" in lines[1] else None

    lines = eventually(cn_sees_the_acknowledgement)
    assert lines[0].startswith("CN/TB-1  发出 sent 2025-07-01 16:00 (UTC+8)  汛期通报")
    assert lines[1] == "    已确认 acknowledged (1): CN-HB 07-01 16:00 “已部署”"
    assert lines[2] == "    未确认 pending (1): CN-HN"

    publish(hb, incident("HB-9", level=4))
    assert run(hb, "escalate", "HB-9", "--reason", "舆情持续发酵", capsys=capsys)[
        1
    ] == (
        "  -> CN: PENDING under national-reporting v1 (national-reporting/escalations)"
    )
    seen = eventually(lambda: run(cn, "escalations", capsys=capsys)[1:])
    assert seen[0] == (
        "    事件 incident CN-HB/HB-9 (as escalated; not otherwise held here): "
        "事件 HB-9 · 食品药品(医疗器械)安全事故 food/drug/device safety · "
        "Ⅳ 一般 ordinary"
    )
    assert "    理由 reason: 舆情持续发酵" in seen
    feed = run(cn, "inbox", capsys=capsys)
    assert "    提级 escalated CN-HB/HB-9: 事件 HB-9 · 舆情持续发酵" in feed
