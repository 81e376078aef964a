"""Shared fixtures: certificates made for the test run, databases, real nodes.

Integration tests start real nodes in this process: real gRPC servers on port
0, real mutual TLS with a CA made here, and a real database (SQLite files, and
the PostgreSQL server at GUANTONG_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.identity import init_ca, issue_client_cert, issue_node_cert
from node.app import Node
from node.clock import Clock
from node.config import NodeConfig
from node.logs import configure

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICIES = PROJECT_ROOT / "policies"
SAMPLE = PROJECT_ROOT / "examples" / "incidents-2025.jsonl"
NODES = ("CN", "CN-HB", "CN-HN", "CN-JX", "CN-SH", "CN-JS", "CN-GS")
POSTGRES_URL = os.environ.get(
    "GUANTONG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

configure("warning", json=False)


def eventually(
    predicate: Callable[[], Any], timeout_s: float = 15.0, interval_s: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met within {timeout_s} s; last value {value!r}"
            )
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation CA with a certificate for every demo node and a client."""
    directory = tmp_path_factory.mktemp("certs")
    init_ca(directory)
    for node_id in NODES:
        issue_node_cert(directory, node_id)
    issue_client_cert(directory, "CN-HB", "press-office")
    return directory


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with a certificate that claims to be CN-HN."""
    directory = tmp_path_factory.mktemp("foreign-certs")
    init_ca(directory)
    issue_node_cert(directory, "CN-HN")
    return directory


@pytest.fixture
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases; drops them after the test."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def make() -> str:
        name = f"guantong_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return (
            sa.make_url(POSTGRES_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )

    try:
        yield make
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(
                    sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    return postgres_databases()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on a SQLite file and on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def node_config(
    node_id: str,
    certs: Path,
    data_dir: Path,
    peers: dict[str, str],
    policies: Path = POLICIES,
    database_url: str | None = None,
    **overrides: Any,
) -> NodeConfig:
    values: dict[str, Any] = {
        "node_id": node_id,
        "data_dir": data_dir,
        "database_url": database_url,
        "policies": policies,
        "tls": {
            "ca": certs / "ca.pem",
            "cert": certs / node_id / "node.pem",
            "key": certs / node_id / "node.key",
        },
        "peers": {peer: {"address": address} for peer, address in peers.items()},
        "delivery": {
            "initial_backoff_ms": 20,
            "max_backoff_s": 0.3,
            "quick_retries": 2,
            "quick_retry_wait_ms": 10,
            "push_timeout_s": 5,
            "idle_poll_ms": 200,
        },
    }
    values.update(overrides)
    return NodeConfig.model_validate(values)


class Federation:
    """Real nodes in this process, wired to each other's ports."""

    def __init__(self, certs: Path, root: Path, policies: Path = POLICIES):
        self.certs = certs
        self.root = root
        self.policies = policies
        self.nodes: dict[str, Node] = {}
        self.peers: dict[str, tuple[str, ...]] = {}
        self.database_urls: dict[str, str | None] = {}

    def start(
        self,
        node_id: str,
        peers: tuple[str, ...],
        database_url: str | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> Node:
        """Start (or restart) ``node_id`` on port 0 and tell its peers where it is.

        ``clock``: a FakeClock to move instead of waiting (deadlines, backoff).
        """
        self.peers[node_id] = peers
        self.database_urls.setdefault(node_id, database_url)
        addresses = {
            peer: self.nodes[peer].federation_address
            if peer in self.nodes
            else "127.0.0.1:1"
            for peer in peers
        }
        config = node_config(
            node_id,
            self.certs,
            self.root / node_id,
            addresses,
            policies=self.policies,
            database_url=self.database_urls[node_id],
            **overrides,
        )
        node = Node(config, clock=clock)
        node.start()
        self.nodes[node_id] = node
        for other_id, other in self.nodes.items():
            if (
                other_id != node_id
                and node_id in other.peer_addresses
                and not other.stopped
            ):
                other.set_peer_address(node_id, node.federation_address)
        return node

    def stop(self, node_id: str) -> None:
        self.nodes[node_id].stop(grace_s=0.5)

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop(grace_s=0.5)


@pytest.fixture
def federation(certs: Path, tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(certs, tmp_path)
    yield fed
    fed.stop_all()


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped agreements."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("cases"))
    return target
