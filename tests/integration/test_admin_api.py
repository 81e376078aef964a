"""The Admin API on a running node: reload, status, explain and resend."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from guantong.v1 import admin_pb2 as api
from guantong.v1 import admin_pb2_grpc as admin_grpc
from guantong.v1 import local_pb2 as local_api
from structlog.testing import capture_logs

from node.app import Node
from node.record_json import record_from_json
from tests.conftest import eventually
from tests.helpers import inbox, inbox_refs, incident, local, publish


def admin(node: Node) -> admin_grpc.AdminStub:
    return admin_grpc.AdminStub(grpc.insecure_channel(node.local_address))


def versions(agreements) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {a.id: a.version for a in agreements}


def by_node(response: api.ExplainResponse) -> dict[str, api.NodeExplanation]:
    return {n.node: n for n in response.nodes}


def edit(path, old: str, new: str) -> None:  # type: ignore[no-untyped-def]
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


# --- reload and status ---------------------------------------------------------


def test_reload_puts_a_changed_agreement_in_force(federation, policies_copy):
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    status = admin(hb).PolicyStatus(api.PolicyStatusRequest(), timeout=5)
    assert versions(status.agreements)["central-china"] == 1
    loaded_before = status.loaded_at.ToDatetime()

    central = policies_copy / "central-china.yaml"
    edit(central, "version: 1", "version: 2")
    edit(central, "levels: [1, 2, 3]", "levels: [1, 2, 3, 4]")
    response = admin(hb).ReloadPolicies(api.ReloadPoliciesRequest(), timeout=5)
    admin(hn).ReloadPolicies(api.ReloadPoliciesRequest(), timeout=5)

    assert response.ok and not response.problems
    assert versions(response.agreements) == {
        "central-china": 2,
        "national-reporting": 1,
        "yangtze-delta": 1,
    }
    status = admin(hb).PolicyStatus(api.PolicyStatusRequest(), timeout=5)
    assert status.node == "CN-HB"
    assert versions(status.agreements)["central-china"] == 2
    assert status.loaded_at.ToDatetime() >= loaded_before
    assert not status.HasField("last_refused")
    # The new version decides: a level Ⅳ incident now flows, stamped v2.
    publish(hb, incident("HB-LOW", level=4))
    received = eventually(lambda: inbox(hn))
    assert received[0].envelope.agreement_version == 2


def test_refused_reload_keeps_the_last_good_set_and_is_logged_and_visible(
    federation, policies_copy
):
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    central = policies_copy / "central-china.yaml"
    edit(central, "version: 1", "version: 2")
    edit(central, "levels: [1, 2, 3]", "levels: [1, 2, 5]")

    with capture_logs() as logs:
        response = admin(hb).ReloadPolicies(api.ReloadPoliciesRequest(), timeout=5)

    assert not response.ok
    assert versions(response.agreements)["central-china"] == 1
    assert len(response.problems) == 1
    assert response.problems[0].startswith(f"{central}:")
    assert "flows[0].levels[2]: level 5 is out of range" in response.problems[0]
    refused = [e for e in logs if e["event"] == "policy.reload_refused"]
    assert refused and refused[0]["problems"] == list(response.problems)

    status = admin(hb).PolicyStatus(api.PolicyStatusRequest(), timeout=5)
    assert status.HasField("last_refused")
    assert list(status.last_refused.problems) == list(response.problems)
    assert status.last_refused.at == response.at
    assert versions(status.agreements)["central-china"] == 1
    # The last good version still decides.
    publish(hb, incident("HB-1", level=3))
    eventually(lambda: inbox_refs(hn) == ["HB-1"])
    assert inbox(hn)[0].envelope.agreement_version == 1


def test_refusal_of_a_signal_reload_shows_in_status_until_a_good_reload(
    federation, policies_copy
):
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    (policies_copy / "broken.yaml").write_text("id: [broken\n", encoding="utf-8")

    assert not hb.reload_policies()  # what SIGHUP calls
    status = admin(hb).PolicyStatus(api.PolicyStatusRequest(), timeout=5)
    assert any("broken.yaml" in p for p in status.last_refused.problems)

    (policies_copy / "broken.yaml").unlink()
    assert admin(hb).ReloadPolicies(api.ReloadPoliciesRequest(), timeout=5).ok
    status = admin(hb).PolicyStatus(api.PolicyStatusRequest(), timeout=5)
    assert not status.HasField("last_refused")


def test_status_lists_warnings_of_the_agreements_in_force(federation, policies_copy):
    (policies_copy / "idle.yaml").write_text(
        "id: idle\nversion: 1\ntitle: idle\nmembers: []\n", encoding="utf-8"
    )
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    status = admin(hb).PolicyStatus(api.PolicyStatusRequest(), timeout=5)
    assert any("no members" in w for w in status.warnings)
    assert "idle" in versions(status.agreements)


# --- explain -------------------------------------------------------------------


def test_explain_a_published_record_for_every_node(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1", level=2))

    response = admin(hb).Explain(api.ExplainRequest(ref="HB-1"), timeout=5)

    assert (response.sender, response.kind) == ("CN-HB", "incident")
    assert (response.subject_id, response.subject_version) == ("CN-HB/HB-1", 1)
    assert (response.category, response.level) == ("food_drug_safety", 2)
    nodes = by_node(response)
    assert sorted(nodes) == ["CN", "CN-GS", "CN-HN", "CN-JS", "CN-JX", "CN-SH"]
    hn = nodes["CN-HN"]
    assert hn.receives and hn.allowed
    assert (hn.agreement_id, hn.agreement_version) == ("central-china", 1)
    assert hn.rule == "central-china/incidents" and hn.no_further_sharing
    assert hn.name_zh == "湖南省市场监督管理局"
    # Allowed by national reporting, but CN-HB has no address for CN.
    cn = nodes["CN"]
    assert cn.allowed and not cn.receives and cn.rule == "no-peer-address"
    assert nodes["CN-SH"].rule == "national-reporting/flows"
    assert not nodes["CN-SH"].receives


def test_explain_a_level_four_record_names_the_rule_that_keeps_it_back(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-LOW", level=4))
    response = admin(hb).Explain(api.ExplainRequest(ref="HB-LOW"), timeout=5)
    hn = by_node(response)["CN-HN"]
    assert not hn.allowed and not hn.receives
    assert hn.rule == "central-china/flows[0].levels"
    assert "Ⅳ" in hn.reason and hn.agreement_version == 1


def test_explain_a_statement_judges_it_by_its_stored_incident(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1", level=4, category="rumor"))
    _, statement = record_from_json(
        {
            "ref": "S1",
            "kind": "statement",
            "incident_ref": "HB-1",
            "text": "经核查，网传信息不实。",
            "approved_by": "新闻宣传处",
        },
        "CN-HB",
    )

    response = admin(hb).Explain(api.ExplainRequest(record=statement), timeout=5)

    assert response.kind == "statement" and response.incident_known
    assert (response.category, response.level) == ("rumor", 4)
    assert response.subject_id == ""
    assert by_node(response)["CN-HN"].rule == "central-china/flows[0].levels"


def test_explain_a_statement_whose_incident_is_not_held(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    _, statement = record_from_json(
        {
            "ref": "S1",
            "kind": "statement",
            "incident_ref": "NOPE",
            "text": "口径",
            "approved_by": "处",
        },
        "CN-HB",
    )
    response = admin(hb).Explain(api.ExplainRequest(record=statement), timeout=5)
    assert not response.incident_known and response.level == 0
    assert not any(n.receives for n in response.nodes)


def test_explain_a_lowered_update_names_the_former_holder_as_receiving_it(
    federation,
):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    publish(hb, incident("HB-1", level=2))
    eventually(lambda: inbox_refs(hn) == ["HB-1"])
    # Lowered below central-china's levels: only the delivery history sends it.
    published = publish(hb, incident("HB-1", level=4))

    response = admin(hb).Explain(api.ExplainRequest(ref="HB-1"), timeout=5)

    assert response.subject_version == 2 and response.level == 4
    nodes = by_node(response)
    hn_ = nodes["CN-HN"]
    assert hn_.receives and hn_.allowed
    assert hn_.rule == "central-china/held-earlier-version"
    assert "holds an earlier version (v1" in hn_.reason
    assert "central-china/flows[0].levels" in hn_.reason
    # A node that never held it gets only what the agreements allow.
    assert not nodes["CN-JX"].allowed
    assert nodes["CN-JX"].rule == "central-china/flows[0].levels"
    # The same decisions the publisher made and recorded.
    routed = {d.node: d for d in published.destinations}
    for node, explained in nodes.items():
        assert (explained.allowed, explained.rule) == (
            routed[node].allowed,
            routed[node].rule,
        ), node


def test_explain_a_retraction_lists_exactly_the_holders(federation):
    hb = federation.start("CN-HB", ("CN-HN", "CN"))
    hn = federation.start("CN-HN", ("CN-HB",))
    federation.start("CN", ("CN-HB",))
    publish(hb, incident("HB-1", level=2))
    eventually(lambda: inbox_refs(hn) == ["HB-1"])
    retracted = local(hb).Retract(
        local_api.RetractRequest(ref="HB-1", reason="经核实为不实信息"), timeout=10
    )

    response = admin(hb).Explain(api.ExplainRequest(ref="HB-1"), timeout=5)

    assert response.kind == "retraction" and response.subject_version == 2
    nodes = by_node(response)
    assert {n for n, e in nodes.items() if e.receives} == {"CN", "CN-HN"}
    assert {n for n, e in nodes.items() if e.allowed} == {"CN", "CN-HN"}
    for holder in ("CN", "CN-HN"):
        assert nodes[holder].rule.endswith("/held-earlier-version")
        assert "holds an earlier version (v1" in nodes[holder].reason
    for other in set(nodes) - {"CN", "CN-HN"}:
        assert nodes[other].rule == "never-held"
    routed = {d.node: (d.allowed, d.rule) for d in retracted.destinations}
    assert {n: (e.allowed, e.rule) for n, e in nodes.items()} == routed


def blank_title() -> api.ExplainRequest:
    request = api.ExplainRequest(record=record_from_json(incident("X"), "CN-HB")[1])
    request.record.incident.title = ""
    return request


@pytest.mark.parametrize(
    ("request_", "code", "detail"),
    [
        (api.ExplainRequest(ref="NOPE"), grpc.StatusCode.NOT_FOUND, "ref: 'NOPE'"),
        (api.ExplainRequest(), grpc.StatusCode.INVALID_ARGUMENT, "ref or record"),
        (blank_title(), grpc.StatusCode.INVALID_ARGUMENT, "incident.title"),
    ],
)
def test_explain_refuses_what_it_cannot_explain(federation, request_, code, detail):
    hb = federation.start("CN-HB", ("CN-HN",))
    with pytest.raises(grpc.RpcError) as refused:
        admin(hb).Explain(request_, timeout=5)
    assert refused.value.code() == code
    assert detail in refused.value.details()


def test_explain_does_not_take_a_record_received_from_a_peer_as_its_own(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    publish(hn, incident("HN-1", level=2))
    eventually(lambda: inbox_refs(hb) == ["HN-1"])
    with pytest.raises(grpc.RpcError) as refused:
        admin(hb).Explain(api.ExplainRequest(ref="HN-1"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


# --- resend --------------------------------------------------------------------


def test_resend_delivers_everything_again_to_a_peer_with_an_empty_database(
    federation, tmp_path
):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    refs = [f"HB-{i:02d}" for i in range(12)]
    for ref in refs:
        publish(hb, incident(ref))
    publish(hb, incident("HB-LOW", level=4))  # never queued for CN-HN
    eventually(lambda: inbox_refs(hn) == refs)
    first_ids = [m.envelope.message_id for m in inbox(hn)]

    federation.stop("CN-HN")
    federation.database_urls["CN-HN"] = f"sqlite:///{tmp_path / 'restored.db'}"
    hn = federation.start("CN-HN", ("CN-HB",))
    assert inbox(hn) == []

    response = admin(hb).Resend(api.ResendRequest(peer="CN-HN"), timeout=5)

    assert (response.peer, response.requeued) == ("CN-HN", len(refs))
    eventually(lambda: inbox_refs(hn) == refs)
    assert [m.envelope.message_id for m in inbox(hn)] == first_ids
    eventually(lambda: hb.store.peer_counts()[0].pending == 0)
    assert hb.store.peer_counts()[0].delivered == len(refs)


def test_resend_to_a_peer_that_kept_its_data_is_answered_as_duplicates(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    for ref in ("HB-1", "HB-2"):
        publish(hb, incident(ref))
    eventually(lambda: inbox_refs(hn) == ["HB-1", "HB-2"])

    assert admin(hb).Resend(api.ResendRequest(peer="CN-HN"), timeout=5).requeued == 2
    eventually(lambda: hb.store.peer_counts()[0].pending == 0)
    assert hb.store.peer_counts()[0].delivered == 2
    assert inbox_refs(hn) == ["HB-1", "HB-2"]


def test_resend_to_a_node_that_is_not_a_peer_is_refused(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    with pytest.raises(grpc.RpcError) as refused:
        admin(hb).Resend(api.ResendRequest(peer="CN-SH"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "CN-SH" in refused.value.details()


# --- served beside Local -------------------------------------------------------


def test_reflection_lists_the_admin_service_on_the_local_server(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    stub = reflection_pb2_grpc.ServerReflectionStub(
        grpc.insecure_channel(hb.local_address)
    )
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {
        service.name
        for answer in answers
        for service in answer.list_services_response.service
    }
    assert {"guantong.v1.Local", "guantong.v1.Admin"} <= names
