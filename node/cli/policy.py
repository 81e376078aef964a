"""``guantong policy``: check, explain and compare sharing agreements.

* ``validate [FILES...]`` reads agreement files the way a node does and prints
  every error and warning with file, line and key.
* ``explain --record FILE`` says, for every node, whether it would receive a
  record, under which agreement and version, with which fields withheld, or
  which rule kept it back.
* ``diff OLD NEW --records FILE.jsonl`` says which nodes would start or stop
  receiving each record if the agreements in NEW replaced those in OLD.

Records are read in the publisher's JSON shape (``examples/*.jsonl``): the
``node`` field names the sender, and a statement or request is judged by its
incident's facts when that incident is in the same file. All computation is
in ``gateway.policy``; this module only reads arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway.policy import PolicySet, check_policies, load_policies
from gateway.policy.evaluate import roman
from gateway.policy.model import Decision
from gateway.policy.outcome import SampleRecord, delivers, read_jsonl, read_sample
from node.errors import ConfigError, InvalidRecord

DEFAULT_POLICIES = Path("policies")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``policy`` and its sub-commands."""
    policy = subparsers.add_parser(
        "policy",
        help="validate, explain and compare sharing agreements",
        description="Check sharing agreements and see what they let through.",
    )
    commands = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    commands.required = True
    _register_validate(commands)
    _register_explain(commands)
    _register_diff(commands)


def _register_validate(commands: argparse._SubParsersAction) -> None:
    validate = commands.add_parser(
        "validate",
        help="check agreement files and report every problem",
        description=(
            "Check agreement files (and federation.yaml beside them) for syntax "
            "and meaning. Prints every error and warning with file, line and "
            "key; exits 1 if there are errors."
        ),
    )
    validate.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="agreement files or directories (default: policies/)",
    )
    validate.set_defaults(handler=run_validate)


def _register_explain(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser(
        "explain",
        help="say which nodes would receive a record, and why",
        description=(
            "For every node: would it receive this record, under which "
            "agreement and version, with which fields withheld, or which rule "
            "kept it back."
        ),
    )
    explain.add_argument(
        "--record",
        required=True,
        type=Path,
        metavar="FILE",
        help="a .json file with one record, or a .jsonl file (then give --ref)",
    )
    explain.add_argument("--ref", help="the record's ref within a .jsonl file")
    _add_common(explain)
    explain.set_defaults(handler=run_explain)


def _register_diff(commands: argparse._SubParsersAction) -> None:
    diff = commands.add_parser(
        "diff",
        help="what would start or stop flowing if NEW replaced OLD",
        description=(
            "Compare two policy directories over a file of records: which "
            "nodes would now receive each record that did not, and which would "
            "stop."
        ),
    )
    diff.add_argument("old", type=Path, metavar="OLD", help="policy directory in force")
    diff.add_argument("new", type=Path, metavar="NEW", help="proposed policy directory")
    diff.add_argument(
        "--records", required=True, type=Path, metavar="FILE.jsonl", help="records"
    )
    diff.add_argument("--at", type=_aware_time, metavar="ISO-TIME", help="default: now")
    diff.set_defaults(handler=run_diff)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies",
        type=Path,
        default=DEFAULT_POLICIES,
        metavar="DIR",
        help="policy directory (default: policies/)",
    )
    parser.add_argument(
        "--at",
        type=_aware_time,
        metavar="ISO-TIME",
        help="decide as at this time, with offset (default: now)",
    )


def _aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. +08:00")
    return value


# --- validate -----------------------------------------------------------------


def run_validate(args: argparse.Namespace) -> int:
    check = check_policies(args.files or DEFAULT_POLICIES)
    for problem in check.errors:
        print(f"error: {problem}")
    for warning in check.warnings:
        print(f"warning: {warning}")
    if check.policy_set is None:
        print(f"{len(check.errors)} error(s), {len(check.warnings)} warning(s)")
        return 1
    agreements, nodes = len(check.policy_set.agreements), len(check.policy_set.nodes)
    print(f"ok: {agreements} agreements, {nodes} nodes")
    return 0


# --- explain ------------------------------------------------------------------


def run_explain(args: argparse.Namespace) -> int:
    try:
        policy_set = load_policies(args.policies)
        sample = _one_record(args.record, args.ref)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return 2
    except (InvalidRecord, ValueError, OSError) as exc:
        print(f"guantong: {args.record}: {exc}", file=sys.stderr)
        return 2

    now = args.at or datetime.now(UTC)
    print(_describe_record(sample))
    if not sample.incident_known:
        print("  (its incident is not in the file: category and level are unknown)")
    count = len(policy_set.agreements)
    print(
        f"under {args.policies} ({count} agreements) at {now.isoformat('T', 'seconds')}"
    )
    print()
    for decision in policy_set.decide_all(sample.facts, sample.sender, now):
        print(_explain_line(sample, decision, policy_set))
    return 0


def _one_record(path: Path, ref: str | None) -> SampleRecord:
    if path.suffix == ".jsonl":
        lines = read_jsonl(path)
    else:
        lines = [json.loads(path.read_text(encoding="utf-8"))]
    samples = read_sample(lines)
    if ref is None and len(samples) == 1:
        return samples[0]
    if ref is None:
        raise ValueError("holds several records: say which with --ref")
    for sample in samples:
        if sample.ref == ref:
            return sample
    raise ValueError(f"no record with ref {ref!r}")


def _describe_record(sample: SampleRecord) -> str:
    facts = sample.facts
    parts = [f"{sample.ref}: {facts.kind} from {sample.sender}"]
    if facts.category is not None:
        parts.append(f"category {facts.category}")
    if facts.level is not None:
        parts.append(f"level {roman(facts.level)}")
    if facts.exercise:
        parts.append("exercise 演练")
    if facts.addressed_to:
        parts.append(f"addressed to {', '.join(facts.addressed_to)}")
    return ", ".join(parts)


def _explain_line(
    sample: SampleRecord, decision: Decision, policy_set: PolicySet
) -> str:
    node = policy_set.nodes[decision.receiver]
    head = f"{decision.receiver:<6} {node.name_zh}"
    if decision.allowed and not delivers(sample, decision):
        return (
            f"{head}\n    kept back: nothing of substance is left after "
            f"withholding {', '.join(decision.withheld_fields)}"
        )
    if not decision.allowed:
        return f"{head}\n    kept back by {decision.rule}: {decision.reason}"
    withheld = ", ".join(decision.withheld_fields) or "none"
    onward = "no further sharing" if decision.no_further_sharing else "may share on"
    return (
        f"{head}\n    receives under {decision.agreement_id} "
        f"v{decision.agreement_version} ({decision.rule}); withheld: {withheld}; "
        f"{onward}\n    {decision.reason}"
    )


# --- diff ---------------------------------------------------------------------


def run_diff(args: argparse.Namespace) -> int:
    try:
        old, new = load_policies(args.old), load_policies(args.new)
        samples = read_sample(read_jsonl(args.records))
    except ConfigError as exc:
        _print_problems(exc.problems)
        return 2
    except (InvalidRecord, ValueError, OSError) as exc:
        print(f"guantong: {args.records}: {exc}", file=sys.stderr)
        return 2

    now = args.at or datetime.now(UTC)
    changed = 0
    for sample in samples:
        lines = _record_changes(sample, old, new, now)
        if lines:
            changed += 1
            print(_describe_record(sample))
            print("\n".join(lines))
    print(f"{changed} of {len(samples)} records would flow differently")
    return 0


def _record_changes(
    sample: SampleRecord, old: PolicySet, new: PolicySet, now: datetime
) -> list[str]:
    before = _deliveries(sample, old, now)
    after = _deliveries(sample, new, now)
    lines = []
    for node in sorted(set(before) | set(after)):
        was, will = before.get(node), after.get(node)
        if was is None and will is not None:
            lines.append(f"  + {node:<6} would now receive it: {will.reason}")
        elif was is not None and will is None:
            why = _why_not(sample, new, node, now)
            lines.append(f"  - {node:<6} would stop receiving it: {why}")
        elif was and will and was.withheld_fields != will.withheld_fields:
            before_text = ", ".join(was.withheld_fields) or "none"
            after_text = ", ".join(will.withheld_fields) or "none"
            lines.append(f"  ~ {node:<6} withheld: {before_text} -> {after_text}")
    return lines


def _deliveries(
    sample: SampleRecord, policy_set: PolicySet, now: datetime
) -> dict[str, Decision]:
    decisions = policy_set.decide_all(sample.facts, sample.sender, now)
    return {d.receiver: d for d in decisions if delivers(sample, d)}


def _why_not(
    sample: SampleRecord, policy_set: PolicySet, node: str, now: datetime
) -> str:
    if node not in policy_set.nodes:
        return f"{node} is no longer a known node"
    decision = policy_set.decide(sample.facts, sample.sender, node, now)
    if decision.allowed:
        return "nothing of substance is left after withholding"
    return f"{decision.rule}: {decision.reason}"


def _print_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
