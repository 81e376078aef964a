"""The federation CA and the certificates it issues: layout, names, usages."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.identity.pki import (
    CaFiles,
    CertFiles,
    init_ca,
    issue_client_cert,
    issue_node_cert,
)
from gateway.identity.tls import TlsFiles
from node.errors import GuantongError


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_ca_writes_a_signing_ca_with_a_private_key_file(tmp_path: Path) -> None:
    files = init_ca(tmp_path)

    assert files == CaFiles(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert mode_of(files.key) == 0o600
    ca = load(files.cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    key_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.ca
    assert key_usage.key_cert_sign and key_usage.crl_sign
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert key.public_key() == ca.public_key()


def test_init_ca_refuses_to_replace_an_existing_ca(tmp_path: Path) -> None:
    init_ca(tmp_path)
    with pytest.raises(GuantongError, match=str(tmp_path / "ca.pem")):
        init_ca(tmp_path)


def test_init_ca_replaces_an_existing_ca_when_told_to(tmp_path: Path) -> None:
    first = load(init_ca(tmp_path).cert)
    second = load(init_ca(tmp_path, overwrite=True).cert)
    assert first.serial_number != second.serial_number


def test_node_cert_names_the_node_once_and_its_server_name(tmp_path: Path) -> None:
    init_ca(tmp_path)
    files = issue_node_cert(tmp_path, "CN-HB")

    assert files == CertFiles(tmp_path / "CN-HB/node.pem", tmp_path / "CN-HB/node.key")
    cert = load(files.cert)
    names = sans(cert)
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://guantong/node/CN-HB"]
    assert names.get_values_for_type(x509.DNSName) == ["cn-hb.node.guantong"]
    assert usages(cert) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert mode_of(files.key) == 0o600


def test_node_cert_is_signed_by_the_ca(tmp_path: Path) -> None:
    ca = load(init_ca(tmp_path).cert)
    cert = load(issue_node_cert(tmp_path, "CN").cert)
    cert.verify_directly_issued_by(ca)


def test_node_cert_adds_hosts_as_ip_or_dns_names(tmp_path: Path) -> None:
    init_ca(tmp_path)
    hosts = ["127.0.0.1", "::1", "gateway.hb.example"]
    names = sans(load(issue_node_cert(tmp_path, "CN-HB", hosts=hosts).cert))

    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert names.get_values_for_type(x509.DNSName) == [
        "cn-hb.node.guantong",
        "gateway.hb.example",
    ]


@pytest.mark.parametrize(
    "node_id", ["cn-hb", "CN-HBX", "US-CA", "CN/HB", "CN-HB\n", ""]
)
def test_node_cert_refuses_an_invalid_node_id(tmp_path: Path, node_id: str) -> None:
    init_ca(tmp_path)
    with pytest.raises(GuantongError, match=re.escape(f"not a node id: {node_id!r}")):
        issue_node_cert(tmp_path, node_id)


def test_issuing_again_replaces_the_node_cert_and_key(tmp_path: Path) -> None:
    init_ca(tmp_path)
    first = issue_node_cert(tmp_path, "CN-HB")
    old_cert, old_key = first.cert.read_bytes(), first.key.read_bytes()

    second = issue_node_cert(tmp_path, "CN-HB")

    assert second == first
    assert second.cert.read_bytes() != old_cert
    assert second.key.read_bytes() != old_key
    assert mode_of(second.key) == 0o600
    assert sorted(p.name for p in (tmp_path / "CN-HB").iterdir()) == [
        "node.key",
        "node.pem",
    ]


def test_issuing_without_a_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GuantongError, match=str(tmp_path / "ca.pem")):
        issue_node_cert(tmp_path, "CN-HB")


def test_client_cert_names_node_and_client_and_can_only_call(tmp_path: Path) -> None:
    init_ca(tmp_path)
    files = issue_client_cert(tmp_path, "CN-HB", "ops-desk")

    clients = tmp_path / "CN-HB" / "clients"
    assert files == CertFiles(clients / "ops-desk.pem", clients / "ops-desk.key")
    cert = load(files.cert)
    assert [str(name.value) for name in sans(cert)] == [
        "spiffe://guantong/node/CN-HB/client/ops-desk"
    ]
    assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert mode_of(files.key) == 0o600


@pytest.mark.parametrize("name", ["Ops", "-ops", "ops_desk", "a" * 64, ""])
def test_client_cert_refuses_an_invalid_client_name(tmp_path: Path, name: str) -> None:
    init_ca(tmp_path)
    with pytest.raises(GuantongError, match="not a client name"):
        issue_client_cert(tmp_path, "CN-HB", name)


def test_tls_files_follow_the_layout_pki_writes(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    node = issue_node_cert(tmp_path, "CN-HB")
    client = issue_client_cert(tmp_path, "CN-HB", "ops-desk")

    assert TlsFiles.for_node(tmp_path, "CN-HB") == TlsFiles(
        ca.cert, node.cert, node.key
    )
    assert TlsFiles.for_client(tmp_path, "CN-HB", "ops-desk") == TlsFiles(
        ca.cert, client.cert, client.key
    )


def test_tls_files_read_names_the_missing_file(tmp_path: Path) -> None:
    init_ca(tmp_path)
    files = TlsFiles.for_node(tmp_path, "CN-HN")
    with pytest.raises(GuantongError, match=str(files.cert)):
        files.read()


def test_tls_material_never_shows_the_key(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue_node_cert(tmp_path, "CN-HB")
    material = TlsFiles.for_node(tmp_path, "CN-HB").read()
    assert b"PRIVATE KEY" in material.key
    assert "PRIVATE KEY" not in repr(material)
