"""Identity in the federation: the CA and its certificates (``pki``), who a
verified certificate names (``peer``), and gRPC credentials from the files
(``tls``)."""

from gateway.identity.peer import (
    PeerIdentity,
    identity_from_context,
    identity_from_pem,
    is_client_name,
    server_name_for,
)
from gateway.identity.pki import (
    CaFiles,
    CertFiles,
    init_ca,
    issue_client_cert,
    issue_node_cert,
)
from gateway.identity.tls import (
    TlsFiles,
    TlsMaterial,
    channel_credentials,
    secure_channel,
    server_credentials,
)

__all__ = [
    "CaFiles",
    "CertFiles",
    "PeerIdentity",
    "TlsFiles",
    "TlsMaterial",
    "channel_credentials",
    "identity_from_context",
    "identity_from_pem",
    "init_ca",
    "is_client_name",
    "issue_client_cert",
    "issue_node_cert",
    "secure_channel",
    "server_credentials",
    "server_name_for",
]
