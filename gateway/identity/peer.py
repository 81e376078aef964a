"""Who is calling: the identity a verified certificate names.

A federation certificate names its holder in exactly one URI subject
alternative name, in SPIFFE form under the trust domain ``guantong``:

- ``spiffe://guantong/node/CN-HB`` is the node of Hubei, used both to serve and
  to call peers;
- ``spiffe://guantong/node/CN-HB/client/ops-desk`` is a local client of that
  node (a desk application or a script), which may only talk to its own node.

The identity is read once per call from the certificate gRPC has already
verified against the federation CA, never from anything the caller sends in
the request. Anything that does not match these two shapes exactly (no URI, two
URIs, another trust domain, a malformed node id) is refused: the layer fails
closed.

Nodes are also reachable under a DNS name derived from their id,
``server_name_for("CN-HB") == "cn-hb.node.guantong"``. Calling peers verify a
server's certificate against that name, so a node cannot answer for another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
from cryptography import x509

from node.errors import GuantongError, IdentityError
from node.records import is_node_id

TRUST_DOMAIN = "guantong"
SERVER_NAME_SUFFIX = ".node.guantong"

_SPIFFE_ID = re.compile(
    rf"spiffe://{TRUST_DOMAIN}/node/(?P<node>[A-Za-z0-9-]+)"
    r"(?:/client/(?P<client>[A-Za-z0-9-]+))?"
)
_CLIENT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class PeerIdentity:
    """A node, or a named local client of a node, as its certificate names it."""

    node_id: str
    """The node, ISO 3166-2 style (``CN`` or ``CN-XX``)."""

    client: str | None = None
    """The client's name for a client certificate; ``None`` for the node itself."""

    @property
    def is_node(self) -> bool:
        """True for a node's own certificate, false for one of its clients."""
        return self.client is None

    @property
    def spiffe_id(self) -> str:
        """The URI this identity is written as in a certificate."""
        node_uri = f"spiffe://{TRUST_DOMAIN}/node/{self.node_id}"
        return node_uri if self.client is None else f"{node_uri}/client/{self.client}"


def is_client_name(value: str) -> bool:
    """Client names are lower-case DNS-label style: ``[a-z0-9][a-z0-9-]{0,62}``."""
    return bool(_CLIENT_NAME.fullmatch(value))


def server_name_for(node_id: str) -> str:
    """The DNS name a node's certificate carries and callers verify, e.g.
    ``cn-hb.node.guantong`` for ``CN-HB``."""
    # is_node_id anchors with `$`, which lets one trailing newline through.
    if not is_node_id(node_id) or not node_id.isprintable():
        raise GuantongError(f"not a node id: {node_id!r} (expected CN or CN-XX)")
    return f"{node_id.lower()}{SERVER_NAME_SUFFIX}"


def identity_from_pem(pem: bytes) -> PeerIdentity:
    """Parse a PEM certificate and return the identity its one URI SAN names.

    Raises ``IdentityError`` saying what is wrong when the certificate cannot
    be parsed or does not carry exactly one valid Guantong identity.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise IdentityError(f"the peer certificate cannot be parsed: {exc}") from exc
    return _identity_from_uri(_only_uri_san(certificate))


def identity_from_context(context: grpc.ServicerContext) -> PeerIdentity:
    """The identity of the caller of the current RPC, from its verified
    TLS certificate. Raises ``IdentityError`` when there is none."""
    certificates = context.auth_context().get("x509_pem_cert") or []
    if not certificates:
        raise IdentityError("the caller presented no client certificate")
    return identity_from_pem(certificates[0])


def _only_uri_san(certificate: x509.Certificate) -> str:
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound as exc:
        raise IdentityError("the certificate has no subject alternative name") from exc

    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(
            f"the certificate must carry exactly one URI SAN, found {len(uris)}"
            + (f": {', '.join(uris)}" if uris else "")
        )
    return uris[0]


def _identity_from_uri(uri: str) -> PeerIdentity:
    match = _SPIFFE_ID.fullmatch(uri)
    if match is None:
        raise IdentityError(f"URI SAN {uri!r} is not a Guantong node or client id")

    node_id, client = match["node"], match["client"]
    if not is_node_id(node_id):
        raise IdentityError(f"URI SAN {uri!r} names no valid node id ({node_id!r})")
    if client is not None and not is_client_name(client):
        raise IdentityError(f"URI SAN {uri!r} names no valid client ({client!r})")
    return PeerIdentity(node_id, client)
