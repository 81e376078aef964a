"""Overlapping agreements that withhold a field differently.

Two agreements overlap where both let the same sender send the same kind of
record to the same receiver. Evaluation then takes the one that withholds
most (see ``evaluate``), so nothing leaks; but an admin who meant the looser
one to apply, or who tightened one and forgot the other, should hear of it.
This check compares, route by route, which fields each agreement withholds
and under which level, and produces one warning per pair of agreements, kind
and field, on the ``withhold`` key of the first agreement's file.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from gateway.policy.evaluate import roman
from gateway.policy.model import Agreement
from node.yamlfile import YamlDocument


def overlap_warnings(loaded: list[tuple[Agreement, YamlDocument]]) -> list[str]:
    """Warn where two agreements share a route but withhold a field differently.

    One warning per pair of agreements, kind and field, naming the first
    sender→receiver pair and how many there are.
    """
    warnings = []
    for (first, document), (second, _) in combinations(loaded, 2):
        disagreements: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for sender, receiver, kind in _shared_routes(first, second):
            mine = _withhold_profile(first, kind, receiver)
            theirs = _withhold_profile(second, kind, receiver)
            for name in sorted(set(mine) | set(theirs)):
                if mine.get(name) != theirs.get(name):
                    disagreements[(kind, name)].append((sender, receiver))

        for (kind, name), routes in sorted(disagreements.items()):
            sender, receiver = routes[0]
            first_says = _describe(_withhold_profile(first, kind, receiver), name)
            second_says = _describe(_withhold_profile(second, kind, receiver), name)
            message = (
                f"{first.label} and {second.label} both share {kind} records "
                f"{sender}→{receiver} ({len(routes)} route(s) in all) but disagree "
                f"about {name} ({first.id}: {first_says}; {second.id}: {second_says}); "
                "the agreement that withholds more applies"
            )
            warnings.append(document.problem(["withhold"], message))
    return warnings


def _shared_routes(first: Agreement, second: Agreement) -> list[tuple[str, str, str]]:
    common = sorted(first.members & second.members)
    routes: list[tuple[str, str, str]] = []
    for sender in common:
        for receiver in common:
            if sender == receiver:
                continue
            kinds = _kinds_between(first, sender, receiver) & _kinds_between(
                second, sender, receiver
            )
            routes.extend((sender, receiver, kind) for kind in sorted(kinds))
    return routes


def _kinds_between(agreement: Agreement, sender: str, receiver: str) -> set[str]:
    return {
        kind
        for flow in agreement.flows
        if sender in flow.senders and receiver in flow.receivers
        for kind in flow.kinds
    }


def _withhold_profile(
    agreement: Agreement, kind: str, receiver: str
) -> dict[str, frozenset[int | None]]:
    """Field -> the below_level thresholds under which it is withheld."""
    profile: dict[str, set[int | None]] = defaultdict(set)
    for rule in agreement.withhold:
        if rule.receivers is not None and receiver not in rule.receivers:
            continue
        for name in rule.fields:
            if name.startswith(f"{kind}."):
                profile[name].add(rule.below_level)
    return {name: frozenset(levels) for name, levels in profile.items()}


def _describe(profile: dict[str, frozenset[int | None]], name: str) -> str:
    levels = profile.get(name)
    if not levels:
        return "shared"
    if None in levels:
        return "always withheld"
    lowest = min(level for level in levels if level is not None)
    return f"withheld below level {roman(lowest)}"
