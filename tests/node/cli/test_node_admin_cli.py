"""``guantong policy reload|status|explain --ref``, ``peers resend`` against a
running node, and ``policy diff --config`` over a node's own records."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from guantong.v1 import local_pb2 as api

from node.cli import main
from node.record_json import record_from_json
from tests.conftest import POLICIES, eventually
from tests.helpers import inbox_refs, incident, local, publish


def run(node, *argv: str) -> int:  # type: ignore[no-untyped-def]
    command, _, action = argv[0].partition(" ")
    words = [command, action] if action else [command]
    return main([*words, *argv[1:], "--node-address", node.local_address])


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_status_prints_agreements_in_force(federation, capsys):
    hb = federation.start("CN-HB", ("CN-HN",))
    assert run(hb, "policy status") == 0
    out = capsys.readouterr().out
    assert out.startswith("node CN-HB: 3 agreement(s) in force, loaded ")
    assert "  central-china v1  华中三省舆情信息互通协议" in out
    assert "no version mismatches seen with peers" in out
    assert "refused" not in out


def test_refused_reload_prints_every_problem_and_fails(
    federation, policies_copy, capsys
):
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    central = policies_copy / "central-china.yaml"
    edit(central, "members: [CN-HB, CN-HN, CN-JX]", "members: [CN-HB, CN-HN, JX]")

    assert run(hb, "policy reload") == 1
    out = capsys.readouterr().out
    assert out.startswith("refused: 1 problem(s); still in force: central-china v1")
    assert f"error: {central}:" in out and "'JX' is not a known node" in out

    assert run(hb, "policy status") == 0
    out = capsys.readouterr().out
    assert "reload refused at " in out
    assert "the agreements above stay in force" in out
    assert f"  error: {central}:" in out


def test_reload_prints_the_versions_now_in_force(federation, policies_copy, capsys):
    federation.policies = policies_copy
    hb = federation.start("CN-HB", ("CN-HN",))
    edit(policies_copy / "yangtze-delta.yaml", "version: 1", "version: 4")
    assert run(hb, "policy reload") == 0
    assert capsys.readouterr().out.strip() == (
        "reloaded: central-china v1, national-reporting v1, yangtze-delta v4"
    )


def test_explain_ref_asks_the_running_node(federation, capsys):
    hb = federation.start("CN-HB", ("CN-HN",))
    publish(hb, incident("HB-1", level=3, category="rumor"))

    assert run(hb, "policy explain", "--ref", "HB-1") == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "HB-1 (version 1): incident from CN-HB, category rumor, level Ⅲ\n"
        "under the agreements CN-HB has in force, at "
    )
    assert (
        "CN-HN  湖南省市场监督管理局\n    receives under central-china v1 "
        "(central-china/incidents); withheld: none; no further sharing"
    ) in out
    assert "CN-JX  江西省市场监督管理局\n    kept back by no-peer-address" in out


def test_explain_ref_of_an_unknown_record_fails(federation, capsys):
    hb = federation.start("CN-HB", ("CN-HN",))
    assert run(hb, "policy explain", "--ref", "NOPE") == 2
    assert (
        "NOT_FOUND: ref: 'NOPE' was not published by CN-HB" in capsys.readouterr().err
    )


def test_explain_needs_a_record_or_a_ref(capsys):
    assert main(["policy", "explain"]) == 2
    assert "--record FILE, or --ref REF" in capsys.readouterr().err


def test_peers_resend_prints_how_many_were_requeued(federation, capsys):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    for ref in ("HB-1", "HB-2"):
        publish(hb, incident(ref))
    eventually(lambda: inbox_refs(hn) == ["HB-1", "HB-2"])

    assert run(hb, "peers resend", "CN-HN") == 0
    assert capsys.readouterr().out.strip() == "re-queued 2 message(s) for CN-HN"

    assert run(hb, "peers resend", "CN-SH") == 2
    assert "NOT_FOUND: peer: 'CN-SH' is not a peer of CN-HB" in capsys.readouterr().err


# --- diff --config ---------------------------------------------------------------


def node_config_file(federation, node_id: str) -> Path:  # type: ignore[no-untyped-def]
    """A config file for a node the fixture started, as an admin would have it."""
    path = federation.root / f"{node_id}.yaml"
    path.write_text(
        f"node_id: {node_id}\n"
        f"data_dir: {federation.root / node_id}\n"
        f"policies: {federation.policies}\n"
        "tls:\n"
        f"  ca: {federation.certs / 'ca.pem'}\n"
        f"  cert: {federation.certs / node_id / 'node.pem'}\n"
        f"  key: {federation.certs / node_id / 'node.key'}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def proposed(tmp_path: Path) -> Path:
    """Central China shares level Ⅳ too; national reporting only Ⅰ and Ⅱ."""
    folder = tmp_path / "proposed"
    shutil.copytree(POLICIES, folder, ignore=shutil.ignore_patterns("cases"))
    central = folder / "central-china.yaml"
    edit(central, "version: 1", "version: 2")
    edit(central, "levels: [1, 2, 3]", "levels: [1, 2, 3, 4]")
    national = folder / "national-reporting.yaml"
    edit(national, "version: 1", "version: 2")
    edit(national, "levels: [1, 2, 3]", "levels: [1, 2]")
    return folder


def publish_history(hb) -> None:  # type: ignore[no-untyped-def]
    publish(hb, incident("HB-1", level=3))
    publish(hb, incident("HB-LOW", level=4))
    _, statement = record_from_json(
        {
            "ref": "S1",
            "kind": "statement",
            "incident_ref": "HB-LOW",
            "text": "正在核查。",
            "approved_by": "新闻宣传处",
        },
        "CN-HB",
    )
    local(hb).Publish(api.PublishRequest(ref="S1", record=statement), timeout=5)
    # A level Ⅲ report later raised to Ⅰ: its newest version is what counts.
    publish(hb, incident("HB-2", level=3))
    publish(hb, incident("HB-2", level=1))


def test_diff_config_compares_the_records_a_node_published(
    federation, proposed, capsys
):
    hb = federation.start("CN-HB", ("CN-HN",))
    hn = federation.start("CN-HN", ("CN-HB",))
    publish_history(hb)
    eventually(lambda: inbox_refs(hn) == ["HB-1", "HB-2", "HB-2"])
    config = node_config_file(federation, "CN-HB")

    # The node is running: the tool reads beside it.
    code = main(
        ["policy", "diff", str(POLICIES), str(proposed), "--config", str(config)]
    )

    assert code == 0
    out = capsys.readouterr().out
    assert (
        "HB-1: incident from CN-HB, category food_drug_safety, level Ⅲ\n"
        "  - CN     would stop receiving it: national-reporting/flows[0].levels"
    ) in out
    assert (
        "HB-LOW: incident from CN-HB, category food_drug_safety, level Ⅳ\n"
        "  + CN-HN  would now receive it: allowed by central-china v2"
    ) in out
    assert "S1: statement from CN-HB, category food_drug_safety, level Ⅳ" in out
    assert "HB-2" not in out
    assert out.strip().endswith("3 of 4 records would flow differently")


def test_diff_config_leaves_a_stopped_nodes_database_unchanged(
    federation, proposed, capsys
):
    hb = federation.start("CN-HB", ("CN-HN",))
    publish_history(hb)
    federation.stop("CN-HB")
    database = federation.root / "CN-HB" / "node.db"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    files_before = sorted(p.name for p in database.parent.iterdir())
    config = node_config_file(federation, "CN-HB")

    code = main(
        ["policy", "diff", str(POLICIES), str(proposed), "--config", str(config)]
    )

    assert code == 0
    assert "3 of 4 records would flow differently" in capsys.readouterr().out
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in database.parent.iterdir()) == files_before


def test_diff_config_without_a_database_says_so(tmp_path, federation, capsys):
    federation.root = tmp_path / "nowhere"
    federation.root.mkdir()
    config = node_config_file(federation, "CN-HB")
    code = main(
        ["policy", "diff", str(POLICIES), str(POLICIES), "--config", str(config)]
    )
    assert code == 2
    assert "no node database at" in capsys.readouterr().err
