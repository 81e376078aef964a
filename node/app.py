"""A running node: its store, agreements, servers and per-peer senders.

``Node.start()`` migrates the store, loads the agreements, binds the
federation API (always mutual TLS) and the local API (plain on loopback,
mutual TLS with this node's client certificates elsewhere), then starts one
sender per peer and the deadline checker (``node.workflow.deadlines``).
``stop()`` refuses new calls, lets running ones finish within a grace period,
and stops the senders and the checker; nothing acknowledged is in memory only,
so a stop at any moment loses nothing.
"""

from __future__ import annotations

import functools
import threading
from concurrent import futures

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from guantong.v1 import admin_pb2, federation_pb2, local_pb2, workflow_pb2
from guantong.v1 import admin_pb2_grpc as admin_grpc
from guantong.v1 import federation_pb2_grpc as fed_grpc
from guantong.v1 import local_pb2_grpc as api_grpc
from guantong.v1 import workflow_pb2_grpc as workflow_grpc

from gateway.delivery.fanout import Senders
from gateway.delivery.receiver import Receiver
from gateway.delivery.sender import PeerSender
from gateway.identity import (
    PeerIdentity,
    TlsFiles,
    identity_from_pem,
    secure_channel,
    server_credentials,
)
from gateway.identity.tls import SERVER_KEEPALIVE_OPTIONS
from gateway.policy import PolicyHolder
from gateway.transport.auth import CallerAuthInterceptor
from gateway.transport.federation_service import FederationService
from node import lifecycle
from node.admin_api import AdminService
from node.appliers import Appliers
from node.clock import Clock, SystemClock
from node.config import NodeConfig
from node.errors import ConfigError
from node.local_api import LocalService, NewMessages
from node.publishing import Publisher
from node.relay import Relayer
from node.storage import Store
from node.storage.agreement_texts import AgreementTexts
from node.workflow import appliers as workflow_appliers
from node.workflow.deadlines import DeadlineChecker, with_deadline
from node.workflow.service import Workflows
from node.workflow_api import WorkflowService

log = structlog.get_logger(__name__)

SERVER_WORKERS = 16
# No SO_REUSEPORT: a second process on the same address must fail to start,
# not silently share the port and split one node into two.
SERVER_OPTIONS = (*SERVER_KEEPALIVE_OPTIONS, ("grpc.so_reuseport", 0))


class Node:
    def __init__(self, config: NodeConfig, clock: Clock | None = None):
        self.config = config
        self.node_id = config.node_id
        self.clock = clock or SystemClock()
        self.tls = TlsFiles(ca=config.tls.ca, cert=config.tls.cert, key=config.tls.key)
        self.peer_addresses: dict[str, str] = {
            peer: peer_config.address for peer, peer_config in config.peers.items()
        }
        self._addresses_lock = threading.Lock()
        self.federation_port = 0
        self.local_port = 0
        self._stopped = threading.Event()
        self.store: Store | None = None

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._check_own_certificate()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.config.effective_database_url)
        self.store.migrate()
        texts = AgreementTexts(self.store)
        self.policies = PolicyHolder(
            self.config.policies,
            check=texts.problems,
            on_loaded=lambda policy_set: texts.record(policy_set, self.clock.now()),
        )

        self.signal = NewMessages()
        self.appliers = Appliers()
        workflow_appliers.register(
            self.appliers,
            self.node_id,
            workflow_appliers.audience_of(self.policies, self.node_id, self.clock),
        )
        lifecycle.register(self.appliers)
        self.senders = Senders(
            [
                PeerSender(
                    peer,
                    self.store,
                    self.address_of,
                    self._channel,
                    self.config.delivery,
                    self.clock,
                )
                for peer in sorted(self.peer_addresses)
            ]
        )
        self.publisher = Publisher(
            self.node_id,
            self.store,
            self.policies,
            lambda: self.peer_addresses.keys(),
            self.clock,
            on_queued=self.senders.wake,
            appliers=self.appliers,
            prepare=functools.partial(
                with_deadline,
                first_report_hours=self.config.workflow.first_report_hours,
            ),
        )
        self.relayer = Relayer(
            self.node_id,
            self.store,
            self.policies,
            self.publisher,
            self.clock,
            on_queued=self.senders.wake,
        )
        self.receiver = Receiver(
            self.node_id,
            self.store,
            self.policies,
            self.clock,
            on_stored=self.signal.notify,
            appliers=self.appliers,
            on_accepted=self.relayer.follow,
        )
        self.workflows = Workflows(
            self.node_id,
            self.store,
            self.publisher,
            self.policies,
            self.clock,
            self.config.workflow,
        )
        self.deadlines = DeadlineChecker(
            self.node_id,
            self.workflows,
            self.clock,
            self.config.workflow.checker_interval_ms,
        )

        self._federation_server = self._start_federation_server()
        try:
            self._local_server = self._start_local_server()
        except Exception:
            # Leave nothing serving half a node.
            self._federation_server.stop(0)
            self.store.close()
            raise
        self.senders.start()
        self.deadlines.start()
        log.info(
            "node.started",
            node=self.node_id,
            federation_port=self.federation_port,
            local_port=self.local_port,
            peers=sorted(self.peer_addresses),
            agreements=[a.id for a in self.policies.current.agreements],
        )

    def stop(self, grace_s: float = 5.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        events = [
            self._local_server.stop(grace_s),
            self._federation_server.stop(grace_s),
        ]
        self.senders.stop()
        self.deadlines.stop()
        for event in events:
            event.wait(grace_s + 1)
        assert self.store is not None, "opened by start()"
        self.store.close()
        log.info("node.stopped", node=self.node_id)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait(self) -> None:
        """Block until ``stop()`` is called (from a signal handler, say)."""
        self._stopped.wait()

    # --- peers --------------------------------------------------------------

    def address_of(self, peer: str) -> str | None:
        with self._addresses_lock:
            return self.peer_addresses.get(peer)

    def set_peer_address(self, peer: str, address: str) -> None:
        """Point at a peer's new address (a peer restarted on port 0, say)."""
        with self._addresses_lock:
            if peer not in self.peer_addresses:
                raise KeyError(f"{peer} is not a configured peer of {self.node_id}")
            self.peer_addresses[peer] = address
        self.senders.wake([peer])

    def reload_policies(self) -> bool:
        """Reload agreement files; the last good set stays on failure."""
        return self.policies.reload().ok

    @property
    def local_address(self) -> str:
        host = self.config.local_api.listen.rpartition(":")[0]
        return f"{host}:{self.local_port}"

    @property
    def federation_address(self) -> str:
        host = self.config.federation.listen.rpartition(":")[0]
        return f"{host}:{self.federation_port}"

    # --- servers ------------------------------------------------------------

    def _start_federation_server(self) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(
                SERVER_WORKERS, thread_name_prefix=f"fed-{self.node_id}"
            ),
            interceptors=[CallerAuthInterceptor(self._accept_peer)],
            options=SERVER_OPTIONS,
        )
        fed_grpc.add_FederationServicer_to_server(
            FederationService(self.receiver), server
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._add_reflection(
            server, federation_pb2.DESCRIPTOR.services_by_name["Federation"]
        )
        self.federation_port = _bind(
            server,
            "federation.listen",
            self.config.federation.listen,
            server_credentials(self.tls, require_client_auth=True),
        )
        server.start()
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        return server

    def _start_local_server(self) -> grpc.Server:
        assert self.store is not None, "opened by start() before the servers"
        listen = self.config.local_api
        interceptors = (
            [] if listen.is_loopback else [CallerAuthInterceptor(self._accept_client)]
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(
                SERVER_WORKERS, thread_name_prefix=f"local-{self.node_id}"
            ),
            interceptors=interceptors,
            options=SERVER_OPTIONS,
        )
        api_grpc.add_LocalServicer_to_server(
            LocalService(
                self.node_id, self.store, self.publisher, self.signal, self.relayer
            ),
            server,
        )
        admin = AdminService(
            self.node_id,
            self.policies,
            self.store,
            lambda: self.peer_addresses.keys(),
            self.senders.wake,
            self.clock,
        )
        admin_grpc.add_AdminServicer_to_server(admin, server)
        workflow_grpc.add_WorkflowServicer_to_server(
            WorkflowService(self.workflows, self.clock), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._add_reflection(
            server,
            local_pb2.DESCRIPTOR.services_by_name["Local"],
            workflow_pb2.DESCRIPTOR.services_by_name["Workflow"],
            admin_pb2.DESCRIPTOR.services_by_name["Admin"],
        )
        credentials = (
            None
            if listen.is_loopback
            else server_credentials(self.tls, require_client_auth=True)
        )
        self.local_port = _bind(server, "local_api.listen", listen.listen, credentials)
        server.start()
        return server

    @staticmethod
    def _add_reflection(server: grpc.Server, *services) -> None:
        names = tuple(service.full_name for service in services)
        reflection.enable_server_reflection(
            (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    # --- identity -----------------------------------------------------------

    def _accept_peer(self, identity: PeerIdentity) -> str | None:
        if not identity.is_node:
            return (
                "a client certificate cannot call the federation API; "
                "a node certificate is needed"
            )
        if identity.node_id not in self.peer_addresses:
            return f"{identity.node_id} is not a peer of {self.node_id}"
        return None

    def _accept_client(self, identity: PeerIdentity) -> str | None:
        if identity.is_node or identity.node_id != self.node_id:
            return (
                f"only client certificates issued for {self.node_id}'s own clients "
                "may use its local API"
            )
        return None

    def _check_own_certificate(self) -> None:
        pem = self.tls.read().cert
        identity = identity_from_pem(pem)
        if identity.node_id != self.node_id or not identity.is_node:
            raise ConfigError(
                [
                    f"tls.cert: {self.config.tls.cert} names {_describe(identity)}, "
                    f"not {self.node_id}"
                ]
            )

    def _channel(self, address: str, peer: str) -> grpc.Channel:
        return secure_channel(address, self.tls, expected_node_id=peer)


def _bind(
    server: grpc.Server,
    key: str,
    address: str,
    credentials: grpc.ServerCredentials | None,
) -> int:
    """Bind ``address``; a failure names the config key, never a traceback."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigError(
            [f"{key}: cannot bind {address} (in use, or not an address here)"]
        ) from exc
    if not port:
        raise ConfigError(
            [f"{key}: cannot bind {address} (in use, or not an address here)"]
        )
    return port


def _describe(identity: PeerIdentity) -> str:
    if identity.is_node:
        return f"node {identity.node_id}"
    return f"client {identity.client} of node {identity.node_id}"
