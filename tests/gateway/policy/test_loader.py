"""Validation: every problem is found, and each names its file, line and key."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.policy import check_policies, load_policies
from node.errors import ConfigError

POLICIES = Path(__file__).resolve().parents[3] / "policies"
WritePolicies = Callable[..., Path]

# A valid agreement; each case below replaces one line of it.
GOOD = """\
id: sample
version: 1
title: 样例 sample
valid_from: 2025-01-01
members: [CN-HB, CN-HN]
flows:
  - name: incidents
    from: members
    to: members
    kinds: [incident, statement]
    categories: [food_drug_safety]
    levels: [1, 2, 3]
withhold:
  - fields: [incident.entities]
    below_level: 3
"""


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        pytest.param(
            _replace("[food_drug_safety]", "[food_drug_safety, food]"),
            11,
            "flows[0].categories[1]",
            "unknown category 'food'",
            id="unknown category",
        ),
        pytest.param(
            _replace("[incident, statement]", "[incident, tweet]"),
            10,
            "flows[0].kinds[1]",
            "unknown kind 'tweet'",
            id="unknown kind",
        ),
        pytest.param(
            _replace("[1, 2, 3]", "[1, 2, 5]"),
            12,
            "flows[0].levels[2]",
            "level 5 is out of range",
            id="level out of range",
        ),
        pytest.param(
            _replace("[1, 2, 3]", "[0, 1]"),
            12,
            "flows[0].levels[0]",
            "level 0 is out of range",
            id="level zero",
        ),
        pytest.param(
            _replace("[CN-HB, CN-HN]", "[CN-HB, CN-XX]"),
            5,
            "members[1]",
            "'CN-XX' is not a known node",
            id="member is not a known node",
        ),
        pytest.param(
            _replace("from: members", "from: [CN-HB, CN-SH]"),
            8,
            "flows[0].from[1]",
            "CN-SH is not a member of this agreement",
            id="flow from a non-member",
        ),
        pytest.param(
            _replace("to: members", "to: [CN-QQ]"),
            9,
            "flows[0].to[0]",
            "'CN-QQ' is not a known node",
            id="flow to an unknown node",
        ),
        pytest.param(
            _replace("[incident.entities]", "[incident.level]"),
            14,
            "withhold[0].fields[0]",
            "incident.level cannot be withheld",
            id="protected field",
        ),
        pytest.param(
            _replace("[incident.entities]", "[incident.entities, incident.names]"),
            14,
            "withhold[0].fields[1]",
            "unknown field 'incident.names'",
            id="unknown field",
        ),
        pytest.param(
            _replace("below_level: 3", "below_level: 7"),
            15,
            "withhold[0].below_level",
            "level 7 is out of range",
            id="withhold level out of range",
        ),
        pytest.param(
            _replace("    levels: [1, 2, 3]", "    levles: [1, 2, 3]"),
            12,
            "flows[0].levles",
            "unknown key 'levles'",
            id="misspelt key",
        ),
        pytest.param(
            _replace("version: 1", "version: one"),
            2,
            "version",
            "must be a whole number >= 1",
            id="version not a number",
        ),
        pytest.param(
            _replace("valid_from: 2025-01-01", "valid_from: next spring"),
            4,
            "valid_from",
            "must be a date like 2025-01-01",
            id="bad date",
        ),
        pytest.param(
            _replace("    levels: [1, 2, 3]\n", "    min_views: 1000\n").replace(
                "[incident.entities]", "[incident.platforms]"
            ),
            14,
            "withhold[0].fields",
            "incident.platforms cannot be withheld where flow 'incidents' has a heat",
            id="heat figures withheld where heat decides",
        ),
        pytest.param(
            _replace("    kinds: [incident, statement]\n", ""),
            7,
            "flows[0].kinds",
            "is required",
            id="missing kinds",
        ),
        pytest.param(
            _replace(
                "  - name: incidents\n", "  - name: incidents\n    exercise: maybe\n"
            ),
            8,
            "flows[0].exercise",
            "must be true or false",
            id="exercise not a boolean",
        ),
    ],
)
def test_problem_names_file_line_and_key(
    write_policies: WritePolicies, text: str, line: int, key: str, message: str
) -> None:
    folder = write_policies(sample=text)
    with pytest.raises(ConfigError) as raised:
        load_policies(folder)

    prefix = f"{folder / 'sample.yaml'}:{line}: {key}: "
    matching = [p for p in raised.value.problems if p.startswith(prefix)]
    assert matching, raised.value.problems
    assert message in matching[0]


def test_every_problem_is_reported_at_once(write_policies: WritePolicies) -> None:
    text = GOOD.replace("[CN-HB, CN-HN]", "[CN-HB, CN-XX]").replace(
        "[incident, statement]", "[incident, tweet]"
    )
    folder = write_policies(
        sample=text,
        other=GOOD.replace("id: sample", "id: other").replace("[1, 2, 3]", "[9]"),
    )
    problems = check_policies(folder).errors
    assert len(problems) == 3, problems
    assert {Path(p.split(":")[0]).name for p in problems} == {
        "sample.yaml",
        "other.yaml",
    }


def test_duplicate_agreement_id_names_both_files(write_policies: WritePolicies) -> None:
    folder = write_policies(first=GOOD, second=GOOD)
    with pytest.raises(ConfigError) as raised:
        load_policies(folder)
    assert raised.value.problems == [
        f"{folder / 'second.yaml'}:1: id: duplicate agreement id 'sample', "
        f"also used in {folder / 'first.yaml'}:1"
    ]


def test_yaml_syntax_error_names_the_line(write_policies: WritePolicies) -> None:
    folder = write_policies(
        sample=GOOD.replace("members: [CN-HB, CN-HN]", "members: [CN-HB")
    )
    problems = check_policies(folder).errors
    assert len(problems) == 1
    assert problems[0].startswith(f"{folder / 'sample.yaml'}:")
    assert "not valid YAML" in problems[0]


def test_unknown_node_in_federation_file(write_policies: WritePolicies) -> None:
    folder = write_policies()
    federation = folder / "federation.yaml"
    federation.write_text(
        federation.read_text(encoding="utf-8")
        + "  - id: Hubei\n    name_zh: 湖北\n    name_en: Hubei\n",
        encoding="utf-8",
    )
    problems = check_policies(folder).errors
    assert len(problems) == 1
    assert problems[0].startswith(
        f"{federation}:25: nodes[7].id: 'Hubei' is not a node id"
    )


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        pytest.param(
            _replace("[CN-HB, CN-HN]", "[]"),
            5,
            "members",
            "no members: this agreement allows nothing",
            id="empty members",
        ),
        pytest.param(
            _replace("[incident, statement]", "[]"),
            10,
            "flows[0].kinds",
            "no kinds: this flow allows nothing",
            id="empty kinds",
        ),
        pytest.param(
            GOOD.split("flows:")[0] + "flows: []\n",
            6,
            "flows",
            "no flows: this agreement allows nothing",
            id="no flows",
        ),
        pytest.param(
            _replace("[1, 2, 3]", "[]"),
            12,
            "flows[0].levels",
            "no levels",
            id="empty levels",
        ),
        pytest.param(
            _replace("below_level: 3", "below_level: 4"),
            15,
            "withhold[0].below_level",
            "never applies",
            id="withhold that never applies",
        ),
    ],
)
def test_agreements_that_allow_nothing_load_with_a_warning(
    write_policies: WritePolicies, text: str, line: int, key: str, message: str
) -> None:
    folder = write_policies(sample=text)
    policy_set = load_policies(folder)
    prefix = f"{folder / 'sample.yaml'}:{line}: {key}: "
    matching = [w for w in policy_set.warnings if w.startswith(prefix)]
    assert matching and message in matching[0], policy_set.warnings


def test_overlapping_agreements_that_disagree_about_a_field_warn(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(
        sample=GOOD,
        other=GOOD.replace("id: sample", "id: other").split("withhold:")[0],
    )
    warnings = load_policies(folder).warnings
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{folder / 'other.yaml'}:1: withhold: ")
    assert (
        "other v1 and sample v1 both share incident records CN-HB→CN-HN" in warnings[0]
    )
    assert "disagree about incident.entities" in warnings[0]
    assert "other: shared; sample: withheld below level Ⅲ" in warnings[0]


def test_overlapping_agreements_that_agree_do_not_warn(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(sample=GOOD, other=GOOD.replace("id: sample", "id: other"))
    assert load_policies(folder).warnings == ()


def test_missing_federation_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sample.yaml").write_text(GOOD, encoding="utf-8")
    problems = check_policies(tmp_path).errors
    assert problems == [
        f"{tmp_path / 'federation.yaml'}: not found; it lists the known nodes"
    ]


def test_files_are_loaded_with_the_federation_beside_them() -> None:
    policy_set = load_policies([POLICIES / "central-china.yaml"])
    assert [a.id for a in policy_set.agreements] == ["central-china"]
    assert len(policy_set.nodes) == 7


def test_shipped_policies_validate_clean() -> None:
    check = check_policies(POLICIES)
    assert check.errors == []
    assert check.warnings == []
    assert check.policy_set is not None
    ids = [agreement.id for agreement in check.policy_set.agreements]
    assert ids == ["central-china", "national-reporting", "yangtze-delta"]
    assert set(check.policy_set.nodes) == {
        "CN",
        "CN-HB",
        "CN-HN",
        "CN-JX",
        "CN-SH",
        "CN-JS",
        "CN-GS",
    }


def test_case_files_are_not_read_as_agreements() -> None:
    policy_set = load_policies(POLICIES)
    assert all("cases" not in a.source for a in policy_set.agreements)


def test_node_names_are_bilingual() -> None:
    national = load_policies(POLICIES).nodes["CN"]
    assert national.name_zh == "国家市场监督管理总局"
    assert textwrap.shorten(national.label, 30).startswith("CN 国家市场监督管理总局")
