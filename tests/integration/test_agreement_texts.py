"""One agreement version means one text, across reloads and restarts."""

from __future__ import annotations

import pytest

from node.errors import ConfigError
from tests.conftest import Federation


def edit_levels(policies, levels: str) -> None:
    path = policies / "central-china.yaml"
    path.write_text(path.read_text().replace("levels: [1, 2, 3]", f"levels: {levels}"))


def test_agreement_edited_without_a_new_version_is_refused_after_a_restart(
    certs, tmp_path, policies_copy
):
    federation = Federation(certs, tmp_path, policies=policies_copy)
    federation.start("CN-HB", ("CN-HN",))
    federation.stop("CN-HB")

    edit_levels(policies_copy, "[1, 2]")
    with pytest.raises(ConfigError) as refused:
        federation.start("CN-HB", ("CN-HN",))
    assert "central-china version 1 was enforced here with other content" in str(
        refused.value
    )
    assert "central-china.yaml" in str(refused.value)


def test_agreement_with_a_new_version_starts_and_both_texts_are_kept(
    certs, tmp_path, policies_copy
):
    federation = Federation(certs, tmp_path, policies=policies_copy)
    federation.start("CN-HB", ("CN-HN",))
    federation.stop("CN-HB")

    edit_levels(policies_copy, "[1, 2]")
    path = policies_copy / "central-china.yaml"
    path.write_text(path.read_text().replace("version: 1", "version: 2", 1))
    node = federation.start("CN-HB", ("CN-HN",))
    try:
        assert node.policies.current.agreement("central-china").version == 2
        # Going back to version 1's text under version 1 is refused on reload
        # (versions never go back), and the file at version 2 stays in force.
        edit_levels(policies_copy, "[1, 2, 3]")
        path.write_text(path.read_text().replace("version: 2", "version: 1", 1))
        assert not node.reload_policies()
    finally:
        federation.stop_all()
