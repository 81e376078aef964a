"""The agreement set a running node enforces, and safe reloading of it.

A node keeps one PolicyHolder. Readers take ``holder.current`` once per
decision and use that PolicySet throughout; a PolicySet is immutable, so a
reload that happens meanwhile cannot mix two versions of an agreement into
one decision.

``reload()`` (on a signal or an admin call) reads the files again. A set that
fails validation is refused: the last good set stays in force, the refusal is
logged with every problem, and ``last_error`` keeps it visible to admin tools
until a later reload succeeds. Reloads are serialised by a lock; reading
``current`` takes no lock, since replacing one attribute is atomic in Python.

At construction the files must be valid: a node does not start without
agreements it can trust (``ConfigError`` propagates).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway.policy.evaluate import PolicySet
from gateway.policy.loader import check_policies, load_policies
from node.errors import ConfigError

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
# Problems with a loaded set that the files alone cannot show.
Check = Callable[[PolicySet], list[str]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did.

    ``ok`` false means the set in force did not change and ``problems`` says
    why; ``warnings`` are those of the files read, in force or not.
    """

    ok: bool
    at: datetime
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


class PolicyHolder:
    """Holds the current PolicySet; thread-safe reloads keep the last good one."""

    def __init__(
        self,
        paths: Path | Sequence[Path],
        clock: Clock = _utc_now,
        check: Check = lambda policy_set: [],
        on_loaded: Callable[[PolicySet], None] = lambda policy_set: None,
    ):
        """``check`` may refuse a set for reasons the files alone cannot show
        (a version enforced before with other content); ``on_loaded`` hears of
        every set put in force."""
        self._paths = paths
        self._clock = clock
        self._check = check
        self._on_loaded = on_loaded
        self._lock = threading.Lock()
        self._current = load_policies(paths)
        problems = check(self._current)
        if problems:
            raise ConfigError(problems)
        self._last_error: ReloadResult | None = None
        self._loaded_at = clock()
        _log_loaded(self._current)
        on_loaded(self._current)

    @property
    def current(self) -> PolicySet:
        """The set in force now."""
        return self._current

    @property
    def loaded_at(self) -> datetime:
        """When the set in force was loaded."""
        return self._loaded_at

    @property
    def last_error(self) -> ReloadResult | None:
        """The last refused reload, until a reload succeeds."""
        return self._last_error

    def reload(self) -> ReloadResult:
        """Read the files again; keep the current set if they are invalid."""
        with self._lock:
            check = check_policies(self._paths)
            problems = list(check.errors)
            if check.policy_set is not None:
                problems += _version_problems(self._current, check.policy_set)
                problems += self._check(check.policy_set)
            result = ReloadResult(
                ok=not problems,
                at=self._clock(),
                problems=tuple(problems),
                warnings=tuple(check.warnings),
            )
            if problems:
                self._last_error = result
                log.warning(
                    "policy.reload_refused",
                    problems=list(result.problems),
                    in_force=_versions(self._current),
                )
                return result

            # No errors, so the set was built.
            assert check.policy_set is not None
            self._current = check.policy_set
            self._loaded_at = result.at
            self._last_error = None
            _log_loaded(self._current)
            self._on_loaded(self._current)
            return result


def _version_problems(old: PolicySet, new: PolicySet) -> list[str]:
    """Changes an admin made without raising the agreement's version.

    Every delivery and refusal is stamped with an agreement's id and version,
    so one version must always mean one text: a changed agreement needs a
    higher version, and a version never goes back.
    """
    problems = []
    for agreement in new.agreements:
        before = old.agreement(agreement.id)
        if before is None:
            continue
        if agreement.version < before.version:
            problems.append(
                f"{agreement.source}: version: {agreement.id} would go back from "
                f"version {before.version} to {agreement.version}"
            )
        elif agreement.version == before.version and agreement != before:
            problems.append(
                f"{agreement.source}: version: {agreement.id} changed but is still "
                f"version {agreement.version}; raise the version"
            )
    return problems


def _versions(policy_set: PolicySet) -> dict[str, int]:
    return {agreement.id: agreement.version for agreement in policy_set.agreements}


def _log_loaded(policy_set: PolicySet) -> None:
    log.info("policy.loaded", agreements=_versions(policy_set))
    for warning in policy_set.warnings:
        log.warning("policy.warning", problem=warning)
