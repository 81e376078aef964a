"""Reloading: a valid change is picked up, an invalid one leaves the last good set."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.policy import PolicyHolder
from node.errors import ConfigError
from node.records import RecordFacts

WritePolicies = Callable[..., Path]
NOW = datetime(2025, 6, 1, tzinfo=UTC)

PAIR = """
id: pair
version: {version}
title: pair
members: [CN-HB, CN-HN]
flows: [{{name: incidents, from: members, to: members, kinds: [incident],
          levels: {levels}}}]
"""


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def level_four_allowed(holder: PolicyHolder) -> bool:
    facts = RecordFacts(kind="incident", origin="CN-HB", level=4)
    return holder.current.decide(facts, "CN-HB", "CN-HN", NOW).allowed


def test_reload_picks_up_a_valid_change(write_policies: WritePolicies) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    clock = FakeClock()
    holder = PolicyHolder(folder, clock=clock)
    assert not level_four_allowed(holder)

    write_policies(pair=PAIR.format(version=2, levels="[1, 2, 3, 4]"))
    clock.now += timedelta(minutes=5)
    result = holder.reload()

    assert result.ok and result.problems == ()
    assert result.at == clock.now == holder.loaded_at
    assert holder.current.agreement("pair").version == 2  # type: ignore[union-attr]
    assert level_four_allowed(holder)
    assert holder.last_error is None


def test_invalid_file_keeps_the_last_good_version(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    holder = PolicyHolder(folder, clock=FakeClock())
    before = holder.current

    write_policies(pair=PAIR.format(version=2, levels="[1, 2, 3, 5]"))
    result = holder.reload()

    assert not result.ok
    assert any("level 5 is out of range" in p for p in result.problems)
    assert all(p.startswith(str(folder / "pair.yaml")) for p in result.problems)
    assert holder.current is before
    assert holder.current.agreement("pair").version == 1  # type: ignore[union-attr]
    assert holder.last_error == result


def test_a_later_valid_reload_clears_the_error(write_policies: WritePolicies) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    holder = PolicyHolder(folder, clock=FakeClock())
    write_policies(pair="id: [broken")
    assert not holder.reload().ok
    assert holder.last_error is not None

    write_policies(pair=PAIR.format(version=3, levels="[1]"))
    assert holder.reload().ok
    assert holder.last_error is None
    assert holder.current.agreement("pair").version == 3  # type: ignore[union-attr]


def test_reload_reports_warnings(write_policies: WritePolicies) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    holder = PolicyHolder(folder, clock=FakeClock())
    write_policies(pair=PAIR.format(version=2, levels="[]"))
    result = holder.reload()
    assert result.ok
    assert any("no levels" in warning for warning in result.warnings)
    assert holder.current.warnings == result.warnings


def test_a_node_does_not_start_with_invalid_agreements(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[7]"))
    with pytest.raises(ConfigError) as raised:
        PolicyHolder(folder)
    assert "level 7 is out of range" in str(raised.value)


def test_concurrent_reloads_leave_one_consistent_set(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    holder = PolicyHolder(folder, clock=FakeClock())
    threads = [threading.Thread(target=holder.reload) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert holder.current.agreement("pair").version == 1  # type: ignore[union-attr]


def test_changed_agreement_without_a_higher_version_is_refused(
    write_policies: WritePolicies,
) -> None:
    folder = write_policies(pair=PAIR.format(version=2, levels="[1, 2, 3]"))
    holder = PolicyHolder(folder, clock=FakeClock())

    write_policies(pair=PAIR.format(version=2, levels="[1, 2, 3, 4]"))
    same_version = holder.reload()
    write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    older_version = holder.reload()

    assert not same_version.ok
    assert (
        "pair changed but is still version 2; raise the version"
        in same_version.problems[0]
    )
    assert not older_version.ok
    assert "would go back from version 2 to 1" in older_version.problems[0]
    assert not level_four_allowed(holder)


def test_unchanged_files_reload_cleanly(write_policies: WritePolicies) -> None:
    folder = write_policies(pair=PAIR.format(version=1, levels="[1, 2, 3]"))
    holder = PolicyHolder(folder, clock=FakeClock())
    assert holder.reload().ok
