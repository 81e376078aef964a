"""CallerAuthInterceptor on a real server over real mTLS.

Every test starts a gRPC server on port 0 with certificates made by
``gateway.identity.pki`` in the test's own directory (the ``pki`` fixture). It
serves the standard health service and a small guarded ``Probe`` service whose
handlers record each call, so a refusal can be shown to have stopped the call
before it ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.identity.peer import PeerIdentity, server_name_for
from gateway.identity.pki import (
    CaFiles,
    init_ca,
    issue_client_cert,
    issue_node_cert,
)
from gateway.identity.tls import (
    SERVER_KEEPALIVE_OPTIONS,
    TlsFiles,
    secure_channel,
    server_credentials,
)
from gateway.transport.auth import CallerAuthInterceptor, current_identity
from node.errors import GuantongError, IdentityError

SERVER_NODE = "CN-HB"
KNOWN_CALLER = "CN-HN"
UNKNOWN_CALLER = "CN-XZ"
SERVICE = "guantong.test.Probe"
TIMEOUT_S = 10


def accept_known_nodes(identity: PeerIdentity) -> str | None:
    """The rule of a peer-facing server: known nodes only, no client certs."""
    if not identity.is_node:
        return f"client {identity.client} of {identity.node_id} cannot call peers"
    if identity.node_id not in {KNOWN_CALLER, SERVER_NODE}:
        return f"unknown node {identity.node_id}"
    return None


@dataclass
class Probe:
    """Handlers of every RPC kind that answer with the caller they see."""

    calls: list[tuple[PeerIdentity, dict[str, Any]]] = field(default_factory=list)

    def _seen(self) -> bytes:
        identity = current_identity()
        self.calls.append((identity, structlog.contextvars.get_contextvars()))
        return identity.spiffe_id.encode()

    def unary_unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return self._seen()

    def unary_stream(
        self, request: bytes, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        for _ in range(3):
            yield self._seen()

    def stream_unary(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> bytes:
        for _ in requests:
            pass
        return self._seen()

    def stream_stream(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        for _ in requests:
            yield self._seen()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {
            "UnaryUnary": grpc.unary_unary_rpc_method_handler(self.unary_unary),
            "UnaryStream": grpc.unary_stream_rpc_method_handler(self.unary_stream),
            "StreamUnary": grpc.stream_unary_rpc_method_handler(self.stream_unary),
            "StreamStream": grpc.stream_stream_rpc_method_handler(self.stream_stream),
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


@dataclass
class Pki:
    """The federation's certificate directory, and an outsider CA's."""

    directory: Path
    rogue_directory: Path

    def node(self, node_id: str) -> TlsFiles:
        return TlsFiles.for_node(self.directory, node_id)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory, rogue = tmp_path / "federation", tmp_path / "rogue"
    init_ca(directory)
    for node_id in (SERVER_NODE, KNOWN_CALLER, UNKNOWN_CALLER):
        issue_node_cert(directory, node_id)
    issue_client_cert(directory, KNOWN_CALLER, "ops-desk")

    # Another CA issues a certificate that claims to be the known caller.
    init_ca(rogue)
    issue_node_cert(rogue, KNOWN_CALLER)
    return Pki(directory, rogue)


StartServer = Callable[..., tuple[str, Probe]]


@pytest.fixture
def start_server(pki: Pki) -> Iterator[StartServer]:
    servers: list[grpc.Server] = []

    def start(*, require_client_auth: bool = True) -> tuple[str, Probe]:
        probe = Probe()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[CallerAuthInterceptor(accept_known_nodes)],
            options=SERVER_KEEPALIVE_OPTIONS,
        )
        server.add_generic_rpc_handlers((probe.generic_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        credentials = server_credentials(
            pki.node(SERVER_NODE), require_client_auth=require_client_auth
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", probe

    yield start
    for server in servers:
        server.stop(grace=None)


@pytest.fixture
def server(start_server: StartServer) -> tuple[str, Probe]:
    return start_server()


def call(channel: grpc.Channel, method: str = "UnaryUnary") -> Any:
    """Call one Probe method with an empty payload and return its answer(s)."""
    path = f"/{SERVICE}/{method}"
    if method == "UnaryUnary":
        return channel.unary_unary(path)(b"", timeout=TIMEOUT_S)
    if method == "UnaryStream":
        return list(channel.unary_stream(path)(b"", timeout=TIMEOUT_S))
    if method == "StreamUnary":
        return channel.stream_unary(path)(iter([b"", b""]), timeout=TIMEOUT_S)
    return list(channel.stream_stream(path)(iter([b"", b""]), timeout=TIMEOUT_S))


def refusal(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel)
    return caught.value


def ready(channel: grpc.Channel) -> grpc.Channel:
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
    return channel


def plain_tls_channel(address: str, ca: Path) -> grpc.Channel:
    """A channel that verifies the server but presents no certificate."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    override = ("grpc.ssl_target_name_override", server_name_for(SERVER_NODE))
    return grpc.secure_channel(address, credentials, options=[override])


def issue_without_identity(directory: Path) -> TlsFiles:
    """A certificate from the federation CA whose only SAN is a DNS name."""
    ca_files = CaFiles.at(directory)
    ca = x509.load_pem_x509_certificate(ca_files.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_files.key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("nobody.example")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    files = TlsFiles(ca_files.cert, directory / "nobody.pem", directory / "nobody.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def test_known_node_is_admitted_and_the_handler_sees_its_identity(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    with secure_channel(address, pki.node(KNOWN_CALLER), SERVER_NODE) as ch:
        answer = call(ready(ch))

    assert answer == b"spiffe://guantong/node/CN-HN"
    assert probe.calls == [(PeerIdentity(KNOWN_CALLER, None), {"peer": KNOWN_CALLER})]


@pytest.mark.parametrize(
    ("method", "handler_runs"),
    [("UnaryUnary", 1), ("UnaryStream", 3), ("StreamUnary", 1), ("StreamStream", 2)],
)
def test_every_kind_of_rpc_sees_the_caller_on_every_step(
    pki: Pki, server: tuple[str, Probe], method: str, handler_runs: int
) -> None:
    address, probe = server
    with secure_channel(address, pki.node(KNOWN_CALLER), SERVER_NODE) as ch:
        call(ready(ch), method)

    assert [identity.node_id for identity, _ in probe.calls] == [
        KNOWN_CALLER
    ] * handler_runs


@pytest.mark.parametrize("method", ["UnaryUnary", "UnaryStream", "StreamStream"])
def test_every_kind_of_rpc_refuses_an_unknown_node_before_its_handler(
    pki: Pki, server: tuple[str, Probe], method: str
) -> None:
    address, probe = server
    with secure_channel(address, pki.node(UNKNOWN_CALLER), SERVER_NODE) as ch:
        with pytest.raises(grpc.RpcError) as caught:
            call(ready(ch), method)

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert probe.calls == []


def test_identity_does_not_outlive_the_call(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, _ = server
    with secure_channel(address, pki.node(KNOWN_CALLER), SERVER_NODE) as ch:
        call(ready(ch))

    with pytest.raises(IdentityError):
        current_identity()
    assert "peer" not in structlog.contextvars.get_contextvars()


def test_caller_without_certificate_fails_the_tls_handshake(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    with plain_tls_channel(address, pki.node(SERVER_NODE).ca) as channel:
        error = refusal(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == []


def test_certificate_from_another_ca_fails_the_tls_handshake(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    rogue = TlsFiles.for_node(pki.rogue_directory, KNOWN_CALLER)
    # The rogue caller trusts the real CA, so only its own certificate is wrong.
    files = TlsFiles(pki.node(SERVER_NODE).ca, rogue.cert, rogue.key)
    with secure_channel(address, files, SERVER_NODE) as channel:
        error = refusal(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == []


def test_node_the_server_does_not_know_is_denied(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    with secure_channel(address, pki.node(UNKNOWN_CALLER), SERVER_NODE) as ch:
        error = refusal(ready(ch))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == f"unknown node {UNKNOWN_CALLER}"
    assert probe.calls == []


def test_client_certificate_is_denied_where_a_node_is_required(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    files = TlsFiles.for_client(pki.directory, KNOWN_CALLER, "ops-desk")
    with secure_channel(address, files, SERVER_NODE) as channel:
        error = refusal(ready(channel))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ops-desk" in (error.details() or "")
    assert probe.calls == []


def test_ca_certificate_naming_no_identity_is_unauthenticated(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    files = issue_without_identity(pki.directory)
    with secure_channel(address, files, SERVER_NODE) as channel:
        error = refusal(ready(channel))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "URI SAN" in (error.details() or "")
    assert probe.calls == []


def test_server_not_requiring_certificates_still_refuses_calls_without_one(
    pki: Pki, start_server: StartServer
) -> None:
    address, probe = start_server(require_client_auth=False)
    with plain_tls_channel(address, pki.node(SERVER_NODE).ca) as channel:
        error = refusal(ready(channel))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "the caller presented no client certificate"
    assert probe.calls == []


def test_health_stays_open_to_a_caller_the_guarded_method_refuses(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    files = TlsFiles.for_client(pki.directory, KNOWN_CALLER, "ops-desk")
    with secure_channel(address, files, SERVER_NODE) as channel:
        stub = health_pb2_grpc.HealthStub(ready(channel))
        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S).status
        error = refusal(channel)

    assert status == health_pb2.HealthCheckResponse.SERVING
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert probe.calls == []


def test_caller_refuses_a_server_that_is_not_the_node_it_expected(
    pki: Pki, server: tuple[str, Probe]
) -> None:
    address, probe = server
    with secure_channel(address, pki.node(KNOWN_CALLER), "CN-GD") as channel:
        error = refusal(channel)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == []


def test_caller_cannot_override_the_server_name_it_verifies(pki: Pki) -> None:
    override = ("grpc.ssl_target_name_override", server_name_for(UNKNOWN_CALLER))
    with pytest.raises(GuantongError, match="ssl_target_name_override"):
        secure_channel("127.0.0.1:1", pki.node(KNOWN_CALLER), SERVER_NODE, [override])
