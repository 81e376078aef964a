"""Notices (通报) from CN with acknowledgements tracked on CN, and a
province escalating an incident (提级发声) to CN, between real nodes."""

from __future__ import annotations

import grpc
import pytest
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import records_pb2 as pb
from guantong.v1 import workflow_pb2 as wf

from gateway.identity import TlsFiles
from tests.conftest import eventually
from tests.helpers import inbox, incident, publish
from tests.integration.test_peer_checks import federation_stub, push
from tests.workflow_helpers import sealed_from, workflow

PROVINCES = ("CN-HB", "CN-HN", "CN-JX")


@pytest.fixture
def national(federation):
    """CN and three provinces, each province with CN as its peer."""
    cn = federation.start("CN", PROVINCES)
    provinces = {p: federation.start(p, ("CN",)) for p in PROVINCES}
    return cn, provinces


def notices(node) -> list[wf.NoticeView]:  # type: ignore[no-untyped-def]
    return list(workflow(node).ListNotices(wf.ListNoticesRequest(), timeout=10).notices)


def targets(node, subject: str) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    notice = next(n for n in notices(node) if n.subject_id == subject)
    return {t.node: t.acknowledged for t in notice.targets}


def acknowledge(node, notice: str, text: str = "已阅") -> wf.AcknowledgeNoticeResponse:  # type: ignore[no-untyped-def]
    return workflow(node).AcknowledgeNotice(
        wf.AcknowledgeNoticeRequest(notice=notice, text=text), timeout=10
    )


def test_cn_sees_which_chosen_provinces_have_acknowledged_a_notice(national):
    cn, provinces = national
    sent = workflow(cn).SendNotice(
        wf.SendNoticeRequest(
            ref="TB-2025-07",
            title="关于做好汛期食品安全舆情应对的通报",
            body="请各地加强监测。",
            to_nodes=["CN-HB", "CN-HN"],
        ),
        timeout=10,
    )
    subject = sent.notice.subject_id
    assert subject == "CN/TB-2025-07"
    assert {t.node for t in sent.notice.targets} == {"CN-HB", "CN-HN"}
    for province in ("CN-HB", "CN-HN"):
        eventually(lambda p=province: notices(provinces[p]))
    assert notices(provinces["CN-JX"]) == []

    acknowledge(provinces["CN-HB"], "TB-2025-07", "湖北已部署")
    eventually(lambda: targets(cn, subject) == {"CN-HB": True, "CN-HN": False})

    [on_cn] = notices(cn)
    acked = {t.node: t for t in on_cn.targets}
    assert (
        acked["CN-HB"].text == "湖北已部署" and acked["CN-HB"].acknowledged_at.seconds
    )
    assert on_cn.direction == wf.DIRECTION_SENT
    [on_hb] = notices(provinces["CN-HB"])
    assert on_hb.acknowledged and on_hb.direction == wf.DIRECTION_RECEIVED

    acknowledge(provinces["CN-HN"], subject)
    eventually(lambda: targets(cn, subject) == {"CN-HB": True, "CN-HN": True})


def test_a_notice_to_all_provinces_expects_every_province_the_agreement_reaches(
    national,
):
    cn, _ = national
    sent = workflow(cn).SendNotice(wf.SendNoticeRequest(title="全国通报"), timeout=10)
    assert {t.node for t in sent.notice.targets} == {
        "CN-HB",
        "CN-HN",
        "CN-JX",
        "CN-SH",
        "CN-JS",
        "CN-GS",
    }
    assert not any(t.acknowledged for t in sent.notice.targets)


def test_a_province_acknowledges_once(national):
    cn, provinces = national
    sent = workflow(cn).SendNotice(
        wf.SendNoticeRequest(ref="TB-1", title="通报", to_nodes=["CN-HB"]), timeout=10
    )
    hb = provinces["CN-HB"]
    eventually(lambda: notices(hb))
    acknowledge(hb, "TB-1")
    with pytest.raises(grpc.RpcError) as refused:
        acknowledge(hb, "TB-1")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "acknowledged at" in refused.value.details()
    with pytest.raises(grpc.RpcError) as own:
        acknowledge(cn, sent.notice.subject_id)
    assert own.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cn_refuses_an_acknowledgement_from_a_province_the_notice_is_not_for(
    national, certs
):
    cn, _ = national
    workflow(cn).SendNotice(
        wf.SendNoticeRequest(ref="TB-2", title="通报", to_nodes=["CN-HB"]), timeout=10
    )
    forged = sealed_from(
        "CN-JX",
        "TB-2.ack.x",
        pb.Record(notice_ack=pb.NoticeAck(notice_subject="CN/TB-2")),
        "national-reporting",
    )
    response = push(federation_stub(cn, TlsFiles.for_node(certs, "CN-JX")), forged)
    [result] = response.results
    assert result.outcome == fed.REJECTED_INVALID
    assert "notice CN/TB-2 is not for CN-JX" in result.reason
    assert targets(cn, "CN/TB-2") == {"CN-HB": False}


def test_a_province_escalates_an_incident_cn_never_received(national):
    cn, provinces = national
    hb = provinces["CN-HB"]
    # Level Ⅳ: below national-reporting's levels, so CN never got it.
    publish(hb, incident("HB-9", level=4, title="某超市售卖过期食品"))
    response = workflow(hb).EscalateIncident(
        wf.EscalateIncidentRequest(incident="HB-9", reason="属地回应后舆情仍在发酵"),
        timeout=10,
    )
    assert response.escalation.to_node == "CN"
    assert [d.node for d in response.destinations if d.allowed] == ["CN"]

    [seen] = eventually(
        lambda: (
            workflow(cn)
            .ListEscalations(wf.ListEscalationsRequest(), timeout=10)
            .escalations
        )
    )
    assert (seen.origin, seen.incident_subject) == ("CN-HB", "CN-HB/HB-9")
    assert seen.reason == "属地回应后舆情仍在发酵"
    assert seen.incident.title == "某超市售卖过期食品" and seen.incident.level == 4
    assert not seen.incident_held and seen.direction == wf.DIRECTION_RECEIVED
    # In CN's feed too.
    [message] = [m for m in inbox(cn) if m.record.WhichOneof("body") == "escalation"]
    assert message.received_from == "CN-HB"
    assert message.record.escalation.incident.title == "某超市售卖过期食品"


def test_an_escalation_needs_a_reason_and_an_incident_held(national):
    _, provinces = national
    hb = provinces["CN-HB"]
    publish(hb, incident("HB-10", level=2))
    with pytest.raises(grpc.RpcError) as no_reason:
        workflow(hb).EscalateIncident(
            wf.EscalateIncidentRequest(incident="HB-10", reason=" "), timeout=10
        )
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown:
        workflow(hb).EscalateIncident(
            wf.EscalateIncidentRequest(incident="HB-NOPE", reason="急"), timeout=10
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
