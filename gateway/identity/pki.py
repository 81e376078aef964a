"""The federation CA and the certificates it issues to nodes and their clients.

One CA per federation signs every certificate; trusting it is what makes a
node a member. A certificate names its holder in exactly one URI SAN (see
``gateway.identity.peer``). Node certificates also carry the DNS name callers
verify, ``<node id lowercased>.node.guantong``, plus any extra host names or
IP addresses they are reached at, and may both serve and call (EKU serverAuth
and clientAuth). A client certificate may only call (clientAuth).

Everything lives in one directory, the layout ``TlsFiles`` reads back::

    ca.pem  ca.key                          the federation CA
    <NODE>/node.pem  <NODE>/node.key        a node, e.g. CN-HB/node.pem
    <NODE>/clients/<name>.pem  .key         a local client of that node

Keys are ECDSA P-256 in unencrypted PKCS#8, mode 0600: a node must start
unattended, so the directory is what has to be protected. Every file is
written under a temporary name and renamed into place, so a reader sees the
old file or the new one, never half of one. Issuing again for the same name
replaces the certificate and key; that is how a certificate is rotated by
hand.

Known gaps (DESIGN.md section 5):

- the key and certificate are renamed one after the other, not as a pair; a
  process that reads between the two renames gets a mismatched pair. Nodes
  read their files at start, so rotate, then restart;
- nothing is revoked yet: an old or leaked certificate stays valid until it
  expires (825 days by default), because no CRL is published or checked.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.identity.peer import PeerIdentity, is_client_name, server_name_for
from node.errors import GuantongError
from node.records import is_node_id

log = structlog.get_logger(__name__)

CA_COMMON_NAME = "Guantong federation CA"
ORGANIZATION = "Guantong"
# Certificates are valid from a little before now, so a peer whose clock runs
# slightly behind ours does not reject a certificate issued a moment ago.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class CaFiles:
    """Where the federation CA's certificate and key are kept."""

    cert: Path
    key: Path

    @classmethod
    def at(cls, directory: Path) -> CaFiles:
        return cls(directory / "ca.pem", directory / "ca.key")


@dataclass(frozen=True)
class CertFiles:
    """Where one node's or client's certificate and key are kept."""

    cert: Path
    key: Path

    @classmethod
    def for_node(cls, directory: Path, node_id: str) -> CertFiles:
        node_dir = directory / node_id
        return cls(node_dir / "node.pem", node_dir / "node.key")

    @classmethod
    def for_client(cls, directory: Path, node_id: str, client_name: str) -> CertFiles:
        clients_dir = directory / node_id / "clients"
        return cls(
            clients_dir / f"{client_name}.pem", clients_dir / f"{client_name}.key"
        )


@dataclass(frozen=True)
class _Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def init_ca(
    directory: Path, *, valid_days: int = 3650, overwrite: bool = False
) -> CaFiles:
    """Create the federation CA in ``directory``.

    Refuses to replace an existing CA unless ``overwrite``: every certificate
    it issued would stop being trusted.
    """
    files = CaFiles.at(directory)
    for path in (files.cert, files.key):
        if path.exists() and not overwrite:
            raise GuantongError(
                f"a CA already exists at {path}; refusing to replace it"
            )

    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(CA_COMMON_NAME)
    cert = (
        _builder(subject, subject, key, _validity(valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )

    _write_pair(files.cert, files.key, cert, key)
    log.info("pki.ca_created", path=str(files.cert), sha256=_fingerprint(cert))
    return files


def issue_node_cert(
    directory: Path,
    node_id: str,
    *,
    hosts: Sequence[str] = (),
    valid_days: int = 825,
) -> CertFiles:
    """Issue (or reissue) the certificate of node ``node_id``.

    ``hosts`` are extra names the node is reached at: IP addresses become IP
    SANs, anything else a DNS SAN.
    """
    _require_node_id(node_id)
    identity = PeerIdentity(node_id, None)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.spiffe_id)]
    names += _host_names([server_name_for(node_id), *hosts])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]

    files = CertFiles.for_node(directory, node_id)
    _issue(directory, files, identity, names, usages, valid_days)
    return files


def issue_client_cert(
    directory: Path, node_id: str, client_name: str, *, valid_days: int = 825
) -> CertFiles:
    """Issue (or reissue) the certificate of local client ``client_name`` of
    node ``node_id``. It can call its node but cannot serve."""
    _require_node_id(node_id)
    if not is_client_name(client_name):
        raise GuantongError(
            f"not a client name: {client_name!r} (expected [a-z0-9][a-z0-9-]{{0,62}})"
        )
    identity = PeerIdentity(node_id, client_name)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.spiffe_id)]

    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]

    files = CertFiles.for_client(directory, node_id, client_name)
    _issue(directory, files, identity, names, usages, valid_days)
    return files


def read_pem(path: Path, what: str) -> bytes:
    """The bytes of a PEM file; errors name the file and what it should hold."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise GuantongError(f"{what} not found: {path}") from exc
    except OSError as exc:
        raise GuantongError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise GuantongError(f"{what} {path} is not a PEM file")
    return data


def _issue(
    directory: Path,
    files: CertFiles,
    identity: PeerIdentity,
    names: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    valid_days: int,
) -> None:
    ca = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    validity = _validity(valid_days, limit=ca.cert.not_valid_after_utc)
    subject = _name(identity.client or identity.node_id, unit=identity.node_id)
    cert = (
        _builder(subject, ca.cert.subject, key, validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )

    _write_pair(files.cert, files.key, cert, key)
    log.info(
        "pki.cert_issued",
        identity=identity.spiffe_id,
        path=str(files.cert),
        not_after=cert.not_valid_after_utc.isoformat(),
        sha256=_fingerprint(cert),
    )


def _load_ca(directory: Path) -> _Ca:
    files = CaFiles.at(directory)
    cert_pem = read_pem(files.cert, "CA certificate")
    key_pem = read_pem(files.key, "CA key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise GuantongError(f"cannot load the CA from {directory}: {exc}") from exc

    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise GuantongError(f"the CA key {files.key} is not an ECDSA key")
    if key.public_key() != cert.public_key():
        raise GuantongError(f"the CA key {files.key} does not match {files.cert}")
    return _Ca(cert, key)


def _require_node_id(node_id: str) -> None:
    # is_node_id anchors with `$`, which lets one trailing newline through.
    if not is_node_id(node_id) or not node_id.isprintable():
        raise GuantongError(
            f"not a node id: {node_id!r} (expected CN or CN-XX, ISO 3166-2 style)"
        )


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(host.strip() for host in hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not host:
            raise GuantongError("a host name must not be blank")
        try:
            names.append(x509.DNSName(host))
        except ValueError as exc:
            raise GuantongError(f"not a usable host name: {host!r}: {exc}") from exc
    return names


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    validity: tuple[datetime, datetime],
) -> x509.CertificateBuilder:
    not_before, not_after = validity
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # A CA signs certificates and CRLs; a leaf signs TLS handshakes (ECDSA).
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(
    valid_days: int, limit: datetime | None = None
) -> tuple[datetime, datetime]:
    if valid_days <= 0:
        raise GuantongError(f"valid_days must be positive, got {valid_days}")
    now = datetime.now(UTC)
    not_after = now + timedelta(days=valid_days)
    if limit is not None and not_after > limit:
        # A certificate cannot outlive the CA that vouches for it.
        log.warning(
            "pki.validity_clamped", wanted=not_after.isoformat(), to=limit.isoformat()
        )
        not_after = limit
    return now - CLOCK_SKEW, not_after


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _write_pair(
    cert_path: Path,
    key_path: Path,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _replace_file(key_path, key_pem, mode=0o600)
    _replace_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _replace_file(path: Path, data: bytes, *, mode: int) -> None:
    # The temporary file is created with its final mode, so a key is never
    # readable by others, not even for a moment.
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise GuantongError(f"cannot write {path}: {exc.strerror}") from exc
