"""Startup refuses what would split or confuse a node, naming the key at fault."""

from __future__ import annotations

import socket

import pytest

from node.app import Node
from node.errors import ConfigError
from tests.conftest import node_config


def test_second_node_on_the_same_address_fails_to_start(federation, certs, tmp_path):
    first = federation.start("CN-HN", ("CN-HB",))
    twin = Node(
        node_config(
            "CN-HN",
            certs,
            tmp_path / "twin",
            {"CN-HB": "127.0.0.1:1"},
            federation={"listen": first.federation_address},
        )
    )
    with pytest.raises(ConfigError, match=r"federation\.listen: cannot bind"):
        twin.start()


def test_port_held_by_another_program_is_named_not_a_traceback(certs, tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        node = Node(
            node_config(
                "CN-HB",
                certs,
                tmp_path,
                {"CN-HN": "127.0.0.1:1"},
                federation={"listen": address},
            )
        )
        with pytest.raises(
            ConfigError, match=rf"federation\.listen: cannot bind {address}"
        ):
            node.start()
    finally:
        holder.close()


def test_certificate_of_another_node_is_refused_at_startup(certs, tmp_path):
    config = node_config("CN-HB", certs, tmp_path, {"CN-HN": "127.0.0.1:1"})
    config = config.model_copy(
        update={
            "tls": config.tls.model_copy(update={"cert": certs / "CN-HN" / "node.pem"})
        }
    )
    with pytest.raises(ConfigError, match=r"tls\.cert: .* names node CN-HN, not CN-HB"):
        Node(config).start()
