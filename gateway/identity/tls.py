"""gRPC credentials from the files ``gateway.identity.pki`` writes.

Both sides of every connection authenticate: a server requires a client
certificate from the federation CA, and a caller checks that the server's
certificate is not only from that CA but names the node it meant to reach.
gRPC checks the server's DNS SAN against ``grpc.ssl_target_name_override``;
``secure_channel`` always sets it to ``server_name_for(expected_node_id)``,
whatever address the node is dialled at, so a node's certificate cannot be
used to answer for another node.

Files are read when credentials are made; reissued certificates take effect
the next time credentials are made, i.e. after a restart (rotation without
restart is future work, DESIGN.md section 5).

Keepalive: a caller pings a connection that has calls open but no traffic
every 5 minutes, and drops it if no answer comes within 20 s, so a watch
stream on a silently dead connection fails instead of hanging. 5 minutes is
the shortest interval a gRPC server accepts by default, in any language;
pinging more often makes such a server close the connection with
``too_many_pings``, killing the streams on it. Servers built with
``SERVER_KEEPALIVE_OPTIONS`` accept pings every 20 s and ping their callers
themselves; callers of such servers may pass a shorter
``grpc.keepalive_time_ms`` to ``secure_channel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from gateway.identity.peer import server_name_for
from gateway.identity.pki import CaFiles, CertFiles, read_pem
from node.errors import GuantongError

TARGET_NAME_OVERRIDE = "grpc.ssl_target_name_override"

CHANNEL_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # Servers with default settings refuse pings on a connection without calls.
    ("grpc.keepalive_permit_without_calls", 0),
)
SERVER_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Callers may ping as often as every 20 s without being counted as abusive.
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
)


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes of a CA certificate, a certificate and its key.

    The key is left out of ``repr`` so that logging this object cannot leak it.
    """

    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class TlsFiles:
    """The three files a node or client needs to take part in mTLS."""

    ca: Path
    """The federation CA certificate every peer is verified against."""

    cert: Path
    """Our own certificate, presented to the other side."""

    key: Path
    """The private key of ``cert``."""

    @classmethod
    def for_node(cls, directory: Path, node_id: str) -> TlsFiles:
        """The files of node ``node_id`` in a ``pki`` certificate directory."""
        return cls._of(directory, CertFiles.for_node(directory, node_id))

    @classmethod
    def for_client(cls, directory: Path, node_id: str, client_name: str) -> TlsFiles:
        """The files of local client ``client_name`` of node ``node_id``."""
        own = CertFiles.for_client(directory, node_id, client_name)
        return cls._of(directory, own)

    @classmethod
    def _of(cls, directory: Path, own: CertFiles) -> TlsFiles:
        return cls(ca=CaFiles.at(directory).cert, cert=own.cert, key=own.key)

    def read(self) -> TlsMaterial:
        """Read all three files; a missing or unreadable one raises
        ``GuantongError`` naming it."""
        return TlsMaterial(
            ca=read_pem(self.ca, "CA certificate"),
            cert=read_pem(self.cert, "certificate"),
            key=read_pem(self.key, "private key"),
        )


def server_credentials(
    files: TlsFiles, *, require_client_auth: bool = True
) -> grpc.ServerCredentials:
    """Credentials for a server port that presents ``files.cert`` and verifies
    callers' certificates against ``files.ca``."""
    material = files.read()
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.ca,
        require_client_auth=require_client_auth,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Credentials for a channel that presents ``files.cert`` and verifies the
    server against ``files.ca``. See ``secure_channel`` for the name check."""
    material = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )


def secure_channel(
    address: str,
    files: TlsFiles,
    expected_node_id: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """An mTLS channel to ``address`` that only talks to node ``expected_node_id``.

    ``options`` are added to (and may replace) the keepalive defaults; the
    expected server name is not theirs to change.
    """
    if any(name == TARGET_NAME_OVERRIDE for name, _ in options):
        raise GuantongError(f"{TARGET_NAME_OVERRIDE} is set from expected_node_id")
    merged: dict[str, Any] = dict(CHANNEL_KEEPALIVE_OPTIONS)
    merged.update(options)
    merged[TARGET_NAME_OVERRIDE] = server_name_for(expected_node_id)
    return grpc.secure_channel(
        address, channel_credentials(files), options=list(merged.items())
    )
