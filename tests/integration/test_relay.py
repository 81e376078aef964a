"""Onward sharing: the national node passes a province's incident on."""

from __future__ import annotations

import grpc
import pytest
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc
from guantong.v1 import local_pb2 as api

from gateway.identity import TlsFiles, secure_channel
from tests.conftest import eventually
from tests.helpers import inbox, inbox_refs, incident, local, publish


def forward(node, origin: str, ref: str, *to: str) -> api.DeliveryResponse:
    request = api.ForwardRequest(origin=origin, ref=ref, to_nodes=list(to))
    return local(node).Forward(request, timeout=10)


@pytest.fixture
def trio(federation):
    """CN-GS reports to CN; CN relays to CN-HN. CN-GS and CN-HN share nothing."""
    cn = federation.start("CN", ("CN-GS", "CN-HN"))
    gs = federation.start("CN-GS", ("CN",))
    hn = federation.start("CN-HN", ("CN",))
    return cn, gs, hn


def test_national_node_relays_a_particularly_serious_incident(trio):
    cn, gs, hn = trio
    publish(gs, incident("GS-1", level=1))
    eventually(lambda: inbox_refs(cn) == ["GS-1"])

    response = forward(cn, "CN-GS", "GS-1", "CN-HN")
    [to_hn] = response.destinations
    assert to_hn.allowed and to_hn.rule == "national-reporting/relays"

    [message] = eventually(lambda: inbox(hn))
    assert message.received_from == "CN"
    assert message.envelope.origin_node == "CN-GS"
    assert list(message.envelope.path) == ["CN-GS", "CN"]
    assert message.envelope.no_further_sharing
    assert message.record.incident.title == "事件 GS-1"


def test_relayed_copy_may_not_be_passed_on_again(trio, federation):
    cn, gs, hn = trio
    publish(gs, incident("GS-1", level=1))
    eventually(lambda: inbox_refs(cn) == ["GS-1"])
    forward(cn, "CN-GS", "GS-1", "CN-HN")
    eventually(lambda: inbox_refs(hn) == ["GS-1"])

    with pytest.raises(grpc.RpcError) as refused:
        forward(hn, "CN-GS", "GS-1", "CN")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no further sharing" in refused.value.details()


def test_record_under_an_agreement_without_onward_sharing_is_not_passed_on(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB", "CN-JX"))
    publish(hb, incident("HB-1", level=1))
    eventually(lambda: inbox_refs(hn) == ["HB-1"])
    with pytest.raises(grpc.RpcError) as refused:
        forward(hn, "CN-HB", "HB-1", "CN-JX")
    assert "central-china" in refused.value.details()


def test_relay_follows_the_agreements_of_the_relaying_hop(trio):
    cn, gs, hn = trio
    publish(gs, incident("GS-2", level=2))
    eventually(lambda: inbox_refs(cn) == ["GS-2"])
    [to_hn] = forward(cn, "CN-GS", "GS-2", "CN-HN").destinations
    assert not to_hn.allowed and "Ⅱ" in to_hn.reason
    [back] = forward(cn, "CN-GS", "GS-2", "CN-GS").destinations
    assert not back.allowed and back.rule == "already-on-path"


def test_later_versions_and_the_retraction_follow_the_relay(trio):
    cn, gs, hn = trio
    publish(gs, incident("GS-1", level=1))
    eventually(lambda: inbox_refs(cn) == ["GS-1"])
    forward(cn, "CN-GS", "GS-1", "CN-HN")
    eventually(lambda: inbox_refs(hn) == ["GS-1"])

    publish(gs, incident("GS-1", level=1, phase="peak"))
    local(gs).Retract(api.RetractRequest(ref="GS-1", reason="核实为误报"), timeout=10)

    versions = eventually(
        lambda: (
            [m.envelope.subject_version for m in inbox(hn)] == [1, 2, 3] and inbox(hn)
        )
    )
    assert versions[-1].record.WhichOneof("body") == "retraction"


def test_receiver_refuses_a_relay_whose_path_does_not_lead_to_the_sender(trio, certs):
    cn, gs, hn = trio
    publish(gs, incident("GS-1", level=1))
    [held] = eventually(lambda: inbox(cn))
    forged = fed.PushRequest(envelopes=[held.envelope]).envelopes[0]
    forged.no_further_sharing = True  # path is still [CN-GS]: CN never said it relayed

    channel = secure_channel(
        hn.federation_address, TlsFiles.for_node(certs, "CN"), "CN-HN"
    )
    with pytest.raises(grpc.RpcError) as refused:
        fed_grpc.FederationStub(channel).Push(
            fed.PushRequest(envelopes=[forged]), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "does not run from the origin to CN" in refused.value.details()
    assert inbox(hn) == []
