"""The demo's outcome: seven node processes, the sample file, and exactly the
receivers the three agreements imply."""

from __future__ import annotations

import fcntl
import json

import pytest

from gateway.policy import expected_receivers, load_policies
from node.demo import run_demo
from node.errors import GuantongError
from tests.conftest import POLICIES, SAMPLE
from tests.helpers import sample_records


def test_demo_delivers_every_sample_record_to_exactly_the_nodes_its_agreements_imply(
    tmp_path,
):
    lines: list[str] = []
    summary_path = run_demo(SAMPLE, POLICIES, tmp_path / "demo", out=lines.append)

    summary = json.loads(summary_path.read_text("utf-8"))
    expected = expected_receivers(SAMPLE, load_policies(POLICIES))
    assert set(summary) == {r["ref"] for r in sample_records()}
    assert {ref: set(nodes) for ref, nodes in summary.items()} == expected
    # Spot checks against the agreement texts, independent of the helper above.
    assert set(summary["HN-DRILL-02-S1"]) == {"CN", "CN-HB", "CN-JX"}
    assert set(summary["SH-2025-04-02"]) == {"CN-JS"}
    assert summary["JX-DRILL-03"] == []
    assert any("not CN-HB" in line and "Ⅳ" in line for line in lines)
    # After the sample file: a statement superseded, shown as such wherever it went.
    superseded = "SH-2025-0315-01-S1 已被替代 superseded by CN-SH/SH-2025-0315-01-S2"
    assert "    SH-2025-0315-01-S1 v1 went to CN, CN-JS" in lines
    for node in ("CN-SH", "CN", "CN-JS"):
        assert f"    on {node}: {superseded}" in lines
    # And the drill request through its lifecycle, as both nodes show it.
    title = "CN-HB/HB-DRILL-01-R1 (CN-HB asks CN-HN) through its lifecycle:"
    start = lines.index(title)
    steps = lines[start + 1 : start + 6]
    assert [step.split(" -> ")[0] for step in steps] == [
        "    published",
        "    CN-HN 签收 acknowledge",
        "    CN-HN 受理 accept",
        "    CN-HN 结果反馈 report the result",
        "    CN-HB 办结 close",
    ]
    assert steps[2].endswith("on CN-HB: 已受理 accepted · on CN-HN: 已受理 accepted")
    assert steps[4].count("已办结 closed") == 2


def test_demo_runs_again_in_the_same_folder(tmp_path):
    first = run_demo(SAMPLE, POLICIES, tmp_path / "demo", out=lambda line: None)
    second = run_demo(SAMPLE, POLICIES, tmp_path / "demo", out=lambda line: None)
    assert first == second and json.loads(second.read_text("utf-8"))


def test_second_demo_in_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    work_dir = tmp_path / "demo"
    with (tmp_path / ".demo.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(GuantongError, match="another demo is running"):
            run_demo(SAMPLE, POLICIES, work_dir, out=lambda line: None)
    assert not work_dir.exists()
