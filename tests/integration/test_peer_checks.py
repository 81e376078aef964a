"""What a receiving node refuses: callers it cannot identify or does not know,
messages no agreement allows, and messages that contradict what it holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import pytest
from guantong.v1 import federation_pb2 as fed
from guantong.v1 import federation_pb2_grpc as fed_grpc

from gateway.identity import TlsFiles, secure_channel, server_name_for
from node.envelopes import seal
from node.record_json import record_from_json
from node.records import subject_id
from tests.helpers import inbox, incident


def envelope_from(origin: str, data: dict, sender_agreement: str = "central-china"):
    ref, record = record_from_json(data, origin)
    envelope = seal(
        message_id=uuid.uuid4().hex,
        origin=origin,
        author_unit="",
        created_at=datetime.now(UTC),
        subject_id=subject_id(origin, ref),
        subject_version=1,
        ref=ref,
        record=record,
        exercise=data.get("exercise", False),
    )
    envelope.agreement_id = sender_agreement
    envelope.agreement_version = 1
    return envelope


def federation_stub(node, files: TlsFiles) -> fed_grpc.FederationStub:
    channel = secure_channel(
        node.federation_address, files, expected_node_id=node.node_id
    )
    return fed_grpc.FederationStub(channel)


def push(stub, *envelopes):
    return stub.Push(fed.PushRequest(envelopes=list(envelopes)), timeout=5)


@pytest.fixture
def hb(federation):
    return federation.start("CN-HB", ("CN-HN", "CN-JX"))


def test_caller_without_certificate_is_refused_before_any_handler(hb, certs):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes()
    )
    channel = grpc.secure_channel(
        hb.federation_address,
        credentials,
        options=[("grpc.ssl_target_name_override", server_name_for("CN-HB"))],
    )
    with pytest.raises(grpc.RpcError) as refused:
        push(fed_grpc.FederationStub(channel), envelope_from("CN-HN", incident("HN-1")))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert inbox(hb) == [] and hb.store.log_counts() == (0, 0, 0)


def test_certificate_from_another_ca_is_refused(hb, certs, foreign_certs):
    # The foreign certificate claims to be CN-HN, a real peer of CN-HB.
    impostor = TlsFiles(
        ca=certs / "ca.pem",
        cert=foreign_certs / "CN-HN" / "node.pem",
        key=foreign_certs / "CN-HN" / "node.key",
    )
    with pytest.raises(grpc.RpcError) as refused:
        push(federation_stub(hb, impostor), envelope_from("CN-HN", incident("HN-1")))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert hb.store.log_counts() == (0, 0, 0)


def test_certificate_of_a_node_the_config_does_not_know_is_refused(hb, certs):
    # CN-GS has a valid certificate from the federation CA but is no peer of CN-HB.
    stranger = TlsFiles.for_node(certs, "CN-GS")
    with pytest.raises(grpc.RpcError) as refused:
        push(federation_stub(hb, stranger), envelope_from("CN-GS", incident("GS-1")))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "CN-GS" in refused.value.details()
    assert hb.store.log_counts() == (0, 0, 0)


def test_client_certificate_cannot_act_as_a_node(hb, certs):
    client = TlsFiles.for_client(certs, "CN-HB", "press-office")
    with pytest.raises(grpc.RpcError) as refused:
        push(federation_stub(hb, client), envelope_from("CN-HB", incident("HB-1")))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_message_no_agreement_allows_is_refused_and_recorded(hb, certs):
    hn = federation_stub(hb, TlsFiles.for_node(certs, "CN-HN"))
    with pytest.raises(grpc.RpcError) as refused:
        push(hn, envelope_from("CN-HN", incident("HN-LOW", level=4)))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Ⅳ" in refused.value.details()
    assert inbox(hb) == []
    [refusal] = hb.store.refusals()
    assert (refusal.sender, refusal.outcome) == ("CN-HN", "refused_by_agreement")


def test_refused_message_does_not_stall_the_rest_of_its_batch(hb, certs):
    hn = federation_stub(hb, TlsFiles.for_node(certs, "CN-HN"))
    low = envelope_from("CN-HN", incident("HN-LOW", level=4))
    high = envelope_from("CN-HN", incident("HN-HIGH", level=2))
    response = push(hn, low, high)
    assert [r.outcome for r in response.results] == [
        fed.REFUSED_BY_AGREEMENT,
        fed.ACCEPTED,
    ]
    assert [m.envelope.ref for m in inbox(hb)] == ["HN-HIGH"]


def test_peer_cannot_send_another_nodes_record_as_its_own(hb, certs):
    hn = federation_stub(hb, TlsFiles.for_node(certs, "CN-HN"))
    forged = envelope_from("CN-JX", incident("JX-1", level=2))
    with pytest.raises(grpc.RpcError) as refused:
        push(hn, forged)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert inbox(hb) == []


def test_redelivered_duplicate_is_a_no_op_and_changed_bytes_are_rejected(hb, certs):
    hn = federation_stub(hb, TlsFiles.for_node(certs, "CN-HN"))
    original = envelope_from("CN-HN", incident("HN-1", level=2))
    assert push(hn, original).results[0].outcome == fed.ACCEPTED
    assert push(hn, original).results[0].outcome == fed.DUPLICATE

    tampered = fed.PushRequest(envelopes=[original]).envelopes[0]
    _, record = record_from_json(incident("HN-1", level=2, title="改过的标题"), "CN-HN")
    tampered.payload = record.SerializeToString()
    assert push(hn, tampered).results[0].outcome == fed.REJECTED_INVALID

    messages = inbox(hb)
    assert len(messages) == 1 and messages[0].record.incident.title == "事件 HN-1"
    assert [r.outcome for r in hb.store.refusals()] == ["rejected_invalid"]


def test_malformed_envelope_is_rejected_as_invalid(hb, certs):
    hn = federation_stub(hb, TlsFiles.for_node(certs, "CN-HN"))
    broken = envelope_from("CN-HN", incident("HN-1", level=2))
    broken.payload = b"\xff\xff not a record"
    response = push(hn, broken)
    assert response.results[0].outcome == fed.REJECTED_INVALID
    assert "payload" in response.results[0].reason
