"""Applying records: the effects a stored record has beyond the log.

A record's effects (a request's state, a statement's place in the library, a
notice's acknowledgements) are written in the same transaction as the log row
that carries it, whether the record was published here or received from a
peer, so the log and what was derived from it never disagree. Each workflow
registers a function for the kinds it owns.
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


class Appliers:
    def __init__(self) -> None:
        self._by_kind: dict[str, list[ApplyFunction]] = defaultdict(list)

    def register(self, kind: str, function: ApplyFunction) -> None:
        self._by_kind[kind].append(function)

    def hook(self, received_from: str | None):  # type: ignore[no-untyped-def]
        """A Store apply hook for records published here or from one peer."""

        def apply(connection: Connection, seq: int, entry: NewEntry) -> None:
            functions = self._by_kind.get(entry.kind)
            if not functions:
                return
            applied = Applied(seq, read_stored(entry.envelope), received_from)
            for function in functions:
                function(connection, applied)

        return apply
