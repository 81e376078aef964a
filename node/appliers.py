"""Applying records: the effects a stored record has beyond the log.

A record's effects (a request's state, a statement's place in the library, a
notice's acknowledgements) are written in the same transaction as the log row
that carries it, whether the record was published here or received from a
peer, so the log and what was derived from it never disagree. Each workflow
registers a function for the kinds it owns.

A workflow may also register a check for a kind. Checks run for records
received from peers, in the receive's transaction, before the record is
stored: a record that the state this node holds does not allow (a request
move from the wrong state or by the wrong party) is refused and recorded,
never stored nor applied, without failing the rest of its batch. For
records published here the apply function itself raises, and the publish
fails as a whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from node.envelopes import Opened, read_stored
from node.storage.types import NewEntry


@dataclass(frozen=True)
class Applied:
    """What an applier is told about the record it applies."""

    seq: int
    opened: Opened
    # The peer that delivered it; None when it was published here.
    received_from: str | None


ApplyFunction = Callable[[Connection, Applied], None]
# (connection, the record, the peer that sent it) -> why it is refused, or None.
CheckFunction = Callable[[Connection, Opened, str], str | None]


class Appliers:
    def __init__(self) -> None:
        self._by_kind: dict[str, list[ApplyFunction]] = defaultdict(list)
        self._checks: dict[str, list[CheckFunction]] = defaultdict(list)

    def register(self, kind: str, function: ApplyFunction) -> None:
        self._by_kind[kind].append(function)

    def register_check(self, kind: str, function: CheckFunction) -> None:
        self._checks[kind].append(function)

    def check_hook(self, received_from: str):
        """A Store check hook for records received from one peer."""

        def check(connection: Connection, entry: NewEntry) -> str | None:
            functions = self._checks.get(entry.kind)
            if not functions:
                return None
            opened = read_stored(entry.envelope)
            for function in functions:
                reason = function(connection, opened, received_from)
                if reason is not None:
                    return reason
            return None

        return check

    def hook(self, received_from: str | None):
        """A Store apply hook for records published here or from one peer."""

        def apply(connection: Connection, seq: int, entry: NewEntry) -> None:
            functions = self._by_kind.get(entry.kind)
            if not functions:
                return
            applied = Applied(seq, read_stored(entry.envelope), received_from)
            for function in functions:
                function(connection, applied)

        return apply
