"""Reading the caller's identity from its certificate, and refusing the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.identity.peer import (
    PeerIdentity,
    identity_from_context,
    identity_from_pem,
    server_name_for,
)
from gateway.identity.pki import init_ca, issue_client_cert, issue_node_cert
from node.errors import GuantongError, IdentityError


def self_signed(*names: x509.GeneralName) -> bytes:
    """A throwaway certificate carrying exactly ``names`` as its SANs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(names)), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


class FakeContext:
    """Just enough of grpc.ServicerContext for identity_from_context."""

    def __init__(self, auth: dict[str, list[bytes]]):
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_node_certificate_names_the_node(tmp_path: Path) -> None:
    init_ca(tmp_path)
    pem = issue_node_cert(tmp_path, "CN-HB", hosts=["10.0.0.1"]).cert.read_bytes()

    identity = identity_from_pem(pem)

    assert identity == PeerIdentity("CN-HB", None)
    assert identity.is_node


def test_client_certificate_names_node_and_client(tmp_path: Path) -> None:
    init_ca(tmp_path)
    pem = issue_client_cert(tmp_path, "CN-HB", "ops-desk").cert.read_bytes()

    identity = identity_from_pem(pem)

    assert identity == PeerIdentity("CN-HB", "ops-desk")
    assert not identity.is_node


def test_certificate_with_two_uri_sans_is_refused() -> None:
    pem = self_signed(
        uri("spiffe://guantong/node/CN-HB"), uri("spiffe://guantong/node/CN-HN")
    )
    with pytest.raises(IdentityError, match="exactly one URI SAN, found 2"):
        identity_from_pem(pem)


def test_certificate_with_no_uri_san_is_refused() -> None:
    pem = self_signed(x509.DNSName("cn-hb.node.guantong"))
    with pytest.raises(IdentityError, match="exactly one URI SAN, found 0"):
        identity_from_pem(pem)


def test_certificate_without_any_san_is_refused() -> None:
    with pytest.raises(IdentityError, match="no subject alternative name"):
        identity_from_pem(self_signed())


@pytest.mark.parametrize(
    "value",
    [
        "spiffe://other/node/CN-HB",
        "spiffe://guantong/node/cn-hb",
        "spiffe://guantong/node/CN-HB/",
        "spiffe://guantong/node/CN-HB/client/Ops",
        "spiffe://guantong/node/CN-HB/admin/ops",
        "spiffe://guantong/node/CN-HB\n",
        "https://guantong/node/CN-HB",
    ],
)
def test_uri_that_is_no_guantong_identity_is_refused(value: str) -> None:
    with pytest.raises(IdentityError, match="URI SAN"):
        identity_from_pem(self_signed(uri(value)))


def test_unparseable_certificate_is_refused() -> None:
    with pytest.raises(IdentityError, match="cannot be parsed"):
        identity_from_pem(
            b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"
        )


def test_context_without_certificate_is_refused() -> None:
    context = FakeContext({"transport_security_type": [b"ssl"]})
    with pytest.raises(IdentityError, match="no client certificate"):
        identity_from_context(context)  # type: ignore[arg-type]


def test_context_identity_comes_from_the_peer_certificate(tmp_path: Path) -> None:
    init_ca(tmp_path)
    pem = issue_node_cert(tmp_path, "CN-HN").cert.read_bytes()
    context = FakeContext({"x509_pem_cert": [pem]})
    assert identity_from_context(context) == PeerIdentity("CN-HN", None)  # type: ignore[arg-type]


def test_server_name_is_the_lowercased_node_id_under_node_guantong() -> None:
    assert server_name_for("CN-HB") == "cn-hb.node.guantong"
    assert server_name_for("CN") == "cn.node.guantong"


def test_server_name_refuses_an_invalid_node_id() -> None:
    with pytest.raises(GuantongError, match="not a node id"):
        server_name_for("cn-hb.evil.example")


def test_spiffe_id_round_trips_through_a_certificate() -> None:
    identity = PeerIdentity("CN-GD", "night-shift")
    assert identity_from_pem(self_signed(uri(identity.spiffe_id))) == identity
