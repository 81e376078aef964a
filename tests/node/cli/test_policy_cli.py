"""``guantong policy validate | explain | diff`` through their own parser."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from node.cli import policy

ROOT = Path(__file__).resolve().parents[3]
POLICIES = ROOT / "policies"
SAMPLE = ROOT / "examples" / "incidents-2025.jsonl"
AT = "2025-06-01T12:00:00+08:00"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="guantong")
    policy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["policy", *argv])
    return args.handler(args)


def copy_policies(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(POLICIES, folder, ignore=shutil.ignore_patterns("cases"))
    return folder


def test_validate_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("validate", str(POLICIES)) == 0
    assert capsys.readouterr().out.strip() == "ok: 3 agreements, 7 nodes"


def test_validate_prints_every_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_policies(tmp_path, "bad")
    path = folder / "central-china.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("levels: [1, 2, 3]", "levels: [1, 2, 5]")
    text = text.replace("members: [CN-HB, CN-HN, CN-JX]", "members: [CN-HB, CN-HN, JX]")
    path.write_text(text, encoding="utf-8")

    assert run("validate", str(folder)) == 1
    out = capsys.readouterr().out
    assert f"error: {path}:" in out
    assert "members[2]: 'JX' is not a known node" in out
    assert "flows[0].levels[2]: level 5 is out of range" in out
    assert "2 error(s)" in out


def test_validate_prints_warnings_but_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_policies(tmp_path, "warn")
    (folder / "idle.yaml").write_text(
        "id: idle\nversion: 1\ntitle: idle\nmembers: []\n", encoding="utf-8"
    )
    assert run("validate", str(folder)) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "no members" in out
    assert "ok: 4 agreements, 7 nodes" in out


def test_explain_names_agreement_withheld_fields_and_rules(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run("explain", "--record", str(SAMPLE), "--ref", "SH-2025-04-02", "--at", AT)
    assert code == 0
    out = capsys.readouterr().out
    assert "SH-2025-04-02: incident from CN-SH, category market_violation" in out
    assert "receives under yangtze-delta v1" in out
    assert "withheld: incident.entities" in out
    assert "kept back by national-reporting/flows[0].levels" in out
    assert "level Ⅳ 一般" in out
    # Every other node is listed once.
    for node in ("CN ", "CN-GS", "CN-HB", "CN-HN", "CN-JS", "CN-JX"):
        assert out.count(f"\n{node}") == 1, node


def test_explain_one_json_record_whose_incident_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "statement.json"
    record.write_text(
        json.dumps(
            {
                "ref": "HB-S-1",
                "node": "CN-HB",
                "kind": "statement",
                "incident_ref": "HB-1",
                "text": "正在核查。",
                "approved_by": "新闻宣传处",
            }
        ),
        encoding="utf-8",
    )
    assert run("explain", "--record", str(record), "--at", AT) == 0
    out = capsys.readouterr().out
    assert "category and level are unknown" in out
    assert "receives" not in out


def test_explain_needs_a_ref_for_a_file_of_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("explain", "--record", str(SAMPLE)) == 2
    assert "--ref" in capsys.readouterr().err


def test_diff_lists_nodes_that_start_and_stop_receiving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = copy_policies(tmp_path, "old")
    new = copy_policies(tmp_path, "new")
    national = new / "national-reporting.yaml"
    text = national.read_text(encoding="utf-8").replace("version: 1", "version: 2")
    national.write_text(text.replace("levels: [1, 2, 3]", "levels: [1, 2]"), "utf-8")
    central = new / "central-china.yaml"
    text = central.read_text(encoding="utf-8").replace("levels: [1, 2, 3]", "")
    central.write_text(text, encoding="utf-8")

    code = run("diff", str(old), str(new), "--records", str(SAMPLE), "--at", AT)
    assert code == 0
    out = capsys.readouterr().out
    # Level Ⅲ reports stop reaching CN.
    assert "GS-2025-0312-01: incident from CN-GS" in out
    assert "- CN     would stop receiving it: national-reporting/flows[0].levels" in out
    # Jiangxi's ordinary exercise now reaches its neighbours.
    assert "JX-DRILL-03: incident from CN-JX" in out
    assert "+ CN-HB  would now receive it: allowed by central-china v1" in out
    assert out.strip().endswith("records would flow differently")


def test_diff_of_identical_folders_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run("diff", str(POLICIES), str(POLICIES), "--records", str(SAMPLE))
    assert code == 0
    assert capsys.readouterr().out.strip() == "0 of 13 records would flow differently"
