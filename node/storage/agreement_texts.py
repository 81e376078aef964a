"""Which text each agreement version had when this node first enforced it.

A version stamps every delivery and refusal made under it, so an agreement
file edited without raising its version would give two rule sets one name.
The policy holder refuses that on reload by comparing with what is in force;
this ledger makes the same check hold across restarts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from gateway.policy import PolicySet
from gateway.policy.fingerprint import fingerprint
from node.storage import schema as t
from node.storage.store import Store


class AgreementTexts:
    def __init__(self, store: Store):
        self.store = store

    def problems(self, policy_set: PolicySet) -> list[str]:
        """Agreements whose version this node enforced with another text."""
        known = self._known()
        problems = []
        for agreement in policy_set.agreements:
            held = known.get((agreement.id, agreement.version))
            if held is not None and held != fingerprint(agreement):
                problems.append(
                    f"{agreement.source}: version: {agreement.id} version "
                    f"{agreement.version} was enforced here with other content; "
                    "raise the version"
                )
        return problems

    def record(self, policy_set: PolicySet, now: datetime) -> None:
        """Remember the text of every agreement version now in force."""
        known = self._known()
        for agreement in policy_set.agreements:
            if (agreement.id, agreement.version) in known:
                continue
            try:
                with self.store.write() as connection:
                    connection.execute(
                        insert(t.agreement_texts).values(
                            agreement_id=agreement.id,
                            version=agreement.version,
                            fingerprint=fingerprint(agreement),
                            source=agreement.source,
                            first_loaded_at=now,
                        )
                    )
            except IntegrityError:
                pass  # another replica recorded it first; problems() compares

    def _known(self) -> dict[tuple[str, int], str]:
        query = select(
            t.agreement_texts.c.agreement_id,
            t.agreement_texts.c.version,
            t.agreement_texts.c.fingerprint,
        )
        with self.store.read() as connection:
            return {(row[0], row[1]): row[2] for row in connection.execute(query)}
