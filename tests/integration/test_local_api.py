"""The local API: what it refuses, and who may use it off loopback."""

from __future__ import annotations

import grpc
import pytest
from guantong.v1 import local_pb2 as api
from guantong.v1 import local_pb2_grpc as api_grpc
from guantong.v1 import records_pb2 as pb

from gateway.identity import TlsFiles, secure_channel
from node.record_json import record_from_json
from tests.helpers import incident, local, publish


def valid_incident() -> pb.Record:
    return record_from_json(incident("HB-1"), "CN-HB")[1]


def broken(change) -> pb.Record:
    record = valid_incident()
    change(record.incident)
    return record


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (broken(lambda i: setattr(i, "category", 42)), "incident.category"),
        (broken(lambda i: setattr(i, "level", 9)), "incident.level"),
        (broken(lambda i: setattr(i, "title", "")), "incident.title"),
        (broken(lambda i: i.regions.append("42-01")), "incident.regions"),
        (pb.Record(), "record"),
    ],
)
def test_bad_record_is_refused_naming_the_field(federation, record, field):
    hb = federation.start("CN-HB", ("CN-HN",))
    with pytest.raises(grpc.RpcError) as refused:
        local(hb).Publish(api.PublishRequest(ref="HB-1", record=record), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(field)
    assert hb.store.log_counts() == (0, 0, 0)


def test_bad_reference_is_refused(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    with pytest.raises(grpc.RpcError) as refused:
        local(hb).Publish(
            api.PublishRequest(ref="has space", record=valid_incident()), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("ref")


def test_statement_for_an_unknown_incident_is_refused(federation):
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
    with pytest.raises(grpc.RpcError) as refused:
        local(hb).Publish(api.PublishRequest(ref="S1", record=statement), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CN-HB/NOPE" in refused.value.details()


@pytest.fixture
def exposed_hb(federation):
    """CN-HB with its local API bound off loopback."""
    return federation.start("CN-HB", ("CN-HN",), local_api={"listen": "0.0.0.0:0"})


def local_over_tls(node, files: TlsFiles) -> api_grpc.LocalStub:
    address = f"127.0.0.1:{node.local_port}"
    return api_grpc.LocalStub(
        secure_channel(address, files, expected_node_id=node.node_id)
    )


def test_off_loopback_local_api_serves_the_nodes_own_clients(exposed_hb, certs):
    client = local_over_tls(
        exposed_hb, TlsFiles.for_client(certs, "CN-HB", "press-office")
    )
    response = client.Publish(
        api.PublishRequest(ref="HB-1", record=valid_incident()), timeout=5
    )
    assert response.subject_id == "CN-HB/HB-1"


@pytest.mark.parametrize("node_id", ["CN-HN", "CN-HB"])
def test_off_loopback_local_api_refuses_node_certificates(exposed_hb, certs, node_id):
    # A neighbour's node certificate, or even this node's own, is not a client's.
    stub = local_over_tls(exposed_hb, TlsFiles.for_node(certs, node_id))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Publish(api.PublishRequest(ref="HB-1", record=valid_incident()), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert exposed_hb.store.log_counts() == (0, 0, 0)


def test_off_loopback_local_api_refuses_plaintext(exposed_hb):
    stub = api_grpc.LocalStub(
        grpc.insecure_channel(f"127.0.0.1:{exposed_hb.local_port}")
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.Status(api.StatusRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_joint_request_to_a_node_outside_the_federation_is_refused(federation):
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1"))
    _, record = record_from_json(
        {
            "ref": "HB-1-R1",
            "kind": "joint_request",
            "incident_ref": "HB-1",
            "ask": "请核查",
            "to": "CN-XX",
        },
        "CN-HB",
    )
    with pytest.raises(grpc.RpcError) as refused:
        local(hb).Publish(api.PublishRequest(ref="HB-1-R1", record=record), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(
        "joint_request.to_node: CN-XX is not a node of the federation"
    )
