"""The compose federation's node configs load and agree with the agreements."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.policy import load_policies
from node.config import load_config
from tests.conftest import POLICIES, PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"


def test_every_compose_node_has_a_valid_config_whose_peers_share_an_agreement():
    policy = load_policies(POLICIES)
    # Written for the containers: their paths exist there, not here.
    configs = {
        path.stem: load_config(path, check_files=False)
        for path in (DOCKER / "nodes").glob("*.yaml")
    }
    assert set(configs) == set(policy.nodes)
    for node_id, config in configs.items():
        assert config.node_id == node_id
        for peer in config.peers:
            assert any(
                node_id in a.members and peer in a.members for a in policy.agreements
            ), f"{node_id} lists {peer} as a peer but shares no agreement with it"


def test_compose_runs_one_service_per_node_config():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text("utf-8"))
    commands = [s.get("command", []) for s in compose["services"].values()]
    configured = {Path(c[3]).stem for c in commands if c[:2] == ["node", "run"]}
    assert configured == {p.stem for p in (DOCKER / "nodes").glob("*.yaml")}
