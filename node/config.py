"""One typed, validated node configuration, read from a YAML file.

Paths in the file are relative to the file's own folder. Every duration
carries its unit in its name. A bad file stops startup with a ConfigError that
names the file, line and key of each problem.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from node.errors import ConfigError
from node.records import is_node_id
from node.yamlfile import YamlDocument, load_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (port 0 picks a free one)")
    return value


class TlsConfig(_Section):
    """The node's certificate from the federation CA, and the CA itself."""

    ca: Path
    """The federation CA certificate that peers' certificates must chain to."""
    cert: Path
    """This node's certificate; its one URI SAN names the node."""
    key: Path
    """This node's private key."""


class ListenConfig(_Section):
    listen: str = "127.0.0.1:0"
    """host:port to bind; port 0 picks a free port."""

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_address(value)

    @property
    def is_loopback(self) -> bool:
        host = self.listen.rpartition(":")[0].strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class PeerConfig(_Section):
    address: str
    """host:port of the peer's federation API."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_address(value)


class DeliveryConfig(_Section):
    """How the per-peer senders push and back off."""

    batch_size: int = Field(100, ge=1, le=1000)
    """Records per Push call; one batch is in flight per peer."""
    push_timeout_s: float = Field(10.0, gt=0)
    """Deadline of one Push call."""
    quick_retries: int = Field(3, ge=1, le=10)
    """Attempts of one Push before the peer's backoff starts."""
    quick_retry_wait_ms: int = Field(100, ge=0)
    initial_backoff_ms: int = Field(500, ge=1)
    """First backoff after a failed push; doubles on each further failure."""
    max_backoff_s: float = Field(60.0, gt=0)
    """Ceiling of the per-peer backoff."""
    idle_poll_ms: int = Field(1000, ge=10)
    """How often an idle sender looks for work it was not woken for."""


class WorkflowConfig(_Section):
    """Joint-handling requests: their deadlines and the checker that watches
    them; where escalations go."""

    first_report_hours: dict[int, float] = {1: 1.0, 2: 1.0, 3: 2.0, 4: 3.0}
    """Hours a handler has for its first fast report (速报), by the risk level
    of the request's incident (1 Ⅰ 特别重大 to 4 Ⅳ 一般): the deadline of a
    request that sets none of its own (due_at or due_within_hours). Every
    level 1 to 4 must be given."""
    checker_interval_ms: int = Field(30_000, ge=10)
    """How often the deadline checker looks for overdue requests. An overdue
    request is flagged, and escalated where its agreement says so, within one
    interval of its deadline."""
    national_node: str = "CN"
    """The node escalations go to unless the call names another; for overdue
    requests, the agreement's escalate_overdue_to decides instead."""

    @field_validator("first_report_hours")
    @classmethod
    def _every_level(cls, value: dict[int, float]) -> dict[int, float]:
        if set(value) != {1, 2, 3, 4}:
            raise ValueError(
                f"give hours for each level 1 to 4, got levels {sorted(value)}"
            )
        for level, hours in value.items():
            if not hours > 0:
                raise ValueError(f"level {level}: hours must be > 0, got {hours}")
        return value

    @field_validator("national_node")
    @classmethod
    def _national_node(cls, value: str) -> str:
        if not is_node_id(value):
            raise ValueError(f"{value!r} is not a node id like CN or CN-HB")
        return value


class NodeConfig(_Section):
    node_id: str
    """This node's id, e.g. CN-HB; must match the URI SAN of tls.cert."""
    data_dir: Path
    """Where the node keeps its SQLite database and state."""
    database_url: str | None = None
    """SQLAlchemy URL; default is SQLite at data_dir/node.db."""
    policies: Path
    """Folder of agreement files (with federation.yaml)."""
    tls: TlsConfig
    federation: ListenConfig = ListenConfig()
    """The federation API that peers call (always mutual TLS)."""
    local_api: ListenConfig = ListenConfig()
    """The local API for the bureau's own systems; off loopback it needs
    client certificates issued for this node's clients."""
    peers: dict[str, PeerConfig] = {}
    """Peer nodes by id, with their federation addresses."""
    delivery: DeliveryConfig = DeliveryConfig()
    workflow: WorkflowConfig = WorkflowConfig()

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not is_node_id(value):
            raise ValueError(f"{value!r} is not a node id like CN or CN-HB")
        return value

    @field_validator("peers")
    @classmethod
    def _peer_ids(cls, value: dict[str, PeerConfig]) -> dict[str, PeerConfig]:
        for peer in value:
            if not is_node_id(peer):
                raise ValueError(f"{peer!r} is not a node id like CN or CN-HB")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'node.db'}"


_PATH_KEYS = (
    ("data_dir",),
    ("policies",),
    ("tls", "ca"),
    ("tls", "cert"),
    ("tls", "key"),
)


def load_config(path: Path, check_files: bool = True) -> NodeConfig:
    """Read and validate a node config; raise ConfigError naming file, line, key.

    ``check_files`` also requires the TLS files and the policies folder to
    exist; turn it off to check a config written for another machine.
    """
    document = load_yaml(Path(path))
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError(
            [document.problem([], "the config must be a mapping of keys")]
        )
    data = _resolve_paths(data, Path(path).resolve().parent)
    try:
        config = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [document.problem(error["loc"], _message(error)) for error in exc.errors()]
        ) from exc
    problems = _missing_files(config, document) if check_files else []
    if config.node_id in config.peers:
        problems.append(
            document.problem(["peers", config.node_id], "a node is not its own peer")
        )
    if problems:
        raise ConfigError(problems)
    return config


def _missing_files(config: NodeConfig, document: YamlDocument) -> list[str]:
    """Files and folders the config names that are not there."""
    problems = []
    for key in ("ca", "cert", "key"):
        path = getattr(config.tls, key)
        if not path.is_file():
            problems.append(document.problem(["tls", key], f"{path} does not exist"))
    if not config.policies.is_dir():
        problems.append(
            document.problem(["policies"], f"{config.policies} is not a folder")
        )
    return problems


def _message(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return "is not a known key"
    return error["msg"].removeprefix("Value error, ")


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    data = {
        **data,
        "tls": dict(data["tls"])
        if isinstance(data.get("tls"), dict)
        else data.get("tls"),
    }
    for keys in _PATH_KEYS:
        # Whatever the file holds at this key; only a mapping is descended into.
        holder: object = data
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(keys[-1]), str):
            holder[keys[-1]] = str(base / holder[keys[-1]])
    return data
