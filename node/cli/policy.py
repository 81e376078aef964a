"""``guantong policy``: check, explain, compare and reload sharing agreements.

* ``validate [FILES...]`` reads agreement files the way a node does and prints
  every error and warning with file, line and key.
* ``explain --record FILE`` says, for every node, whether it would receive a
  record, under which agreement and version, with which fields withheld, or
  which rule kept it back; ``explain --ref REF`` asks a running node the same
  about a record it published, under the agreements it has in force.
* ``diff OLD NEW --records FILE.jsonl`` says which nodes would start or stop
  receiving each record if the agreements in NEW replaced those in OLD;
  ``--config NODE.yaml`` instead takes the records a node published, read
  from its database (read-only; the node may be running).
* ``reload`` and ``status`` ask a running node to read its agreement files
  again, and what it has in force: versions, the last refused reload, and
  version mismatches with its peers.

Records are read in the publisher's JSON shape (``examples/*.jsonl``): the
``node`` field names the sender, and a statement or request is judged by its
incident's facts when that incident is in the same file (or, with
``--config``, in the node's store). All computation is in ``gateway.policy``
and ``node.explain``; this module only reads arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from guantong.v1 import admin_pb2 as admin
from guantong.v1 import admin_pb2_grpc as admin_grpc

from gateway.policy import PolicySet, check_policies, load_policies
from gateway.policy.evaluate import roman
from gateway.policy.model import Decision
from gateway.policy.outcome import SampleRecord, delivers, read_jsonl, read_sample
from node.cli.connection import call, connection_options, local_channel
from node.config import load_config
from node.errors import ConfigError, GuantongError, InvalidRecord
from node.explain import NodeOutcome, outcomes, published_samples
from node.records import RecordFacts
from node.storage.admin import ReadOnlyDatabase

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
    _register_running(commands)


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
        parents=[connection_options()],
        help="say which nodes would receive a record, and why",
        description=(
            "For every node: would it receive this record, under which "
            "agreement and version, with which fields withheld, or which rule "
            "kept it back. With --record, decided here from files; with --ref "
            "alone, asked of the running node at --node-address about a record "
            "it published, under the agreements it has in force."
        ),
    )
    explain.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="a .json file with one record, or a .jsonl file (then give --ref)",
    )
    explain.add_argument(
        "--ref",
        help="the record's ref within a .jsonl file; without --record, a ref the "
        "running node published",
    )
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
    source = diff.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", type=Path, metavar="FILE.jsonl", help="records")
    source.add_argument(
        "--config",
        type=Path,
        metavar="NODE.yaml",
        help="a node's config: the records that node published, read from its "
        "database without changing it",
    )
    diff.add_argument("--at", type=_aware_time, metavar="ISO-TIME", help="default: now")
    diff.set_defaults(handler=run_diff)


def _register_running(commands: argparse._SubParsersAction) -> None:
    reload = commands.add_parser(
        "reload",
        parents=[connection_options()],
        help="make a running node read its agreement files again",
        description=(
            "Ask the node at --node-address to reload its agreement files now "
            "(as SIGHUP does). Files that fail validation are refused, every "
            "problem is printed with file, line and key, the last good "
            "agreements stay in force, and the exit code is 1."
        ),
    )
    reload.set_defaults(handler=run_reload)
    status = commands.add_parser(
        "status",
        parents=[connection_options()],
        help="the agreements a running node has in force",
        description=(
            "The agreements the node at --node-address enforces, with versions "
            "and when they were loaded, the last refused reload with its "
            "problems, warnings, and peers seen working under another version."
        ),
    )
    status.set_defaults(handler=run_status)


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
    if args.record is None:
        return _explain_on_node(args)
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
    print(_describe(sample.ref, sample.sender, sample.facts))
    if not sample.incident_known:
        print("  (its incident is not in the file: category and level are unknown)")
    count = len(policy_set.agreements)
    print(
        f"under {args.policies} ({count} agreements) at {now.isoformat('T', 'seconds')}"
    )
    print()
    for outcome in outcomes(sample, policy_set, now):
        node = policy_set.nodes[outcome.decision.receiver]
        print(_explain_line(node.id, node.name_zh, outcome))
    return 0


def _explain_on_node(args: argparse.Namespace) -> int:
    if not args.ref:
        print(
            "guantong: give --record FILE, or --ref REF to ask the running node",
            file=sys.stderr,
        )
        return 2
    if args.at is not None:
        print(
            "guantong: --at needs --record; a node decides as at now", file=sys.stderr
        )
        return 2
    stub = admin_grpc.AdminStub(local_channel(args))
    response = call(stub.Explain, admin.ExplainRequest(ref=args.ref), timeout=30)

    facts = RecordFacts(
        kind=response.kind,
        origin=response.sender,
        category=response.category or None,
        level=response.level or None,
        exercise=response.exercise,
        addressed_to=tuple(response.addressed_to),
    )
    name = f"{args.ref} (version {response.subject_version})"
    print(_describe(name, response.sender, facts))
    if not response.incident_known:
        print("  (its incident is not held: category and level are unknown)")
    print(
        f"under the agreements {response.sender} has in force, at {_time(response.at)}"
    )
    print()
    for node in response.nodes:
        outcome = NodeOutcome(
            Decision(
                receiver=node.node,
                allowed=node.allowed,
                agreement_id=node.agreement_id or None,
                agreement_version=node.agreement_version or None,
                rule=node.rule,
                reason=node.reason,
                withheld_fields=tuple(node.withheld_fields),
                no_further_sharing=node.no_further_sharing,
            ),
            node.receives,
            node.rule,
            node.reason,
        )
        print(_explain_line(node.node, node.name_zh, outcome))
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


def _describe(ref: str, sender: str, facts: RecordFacts) -> str:
    parts = [f"{ref}: {facts.kind} from {sender}"]
    if facts.category is not None:
        parts.append(f"category {facts.category}")
    if facts.level is not None:
        parts.append(f"level {roman(facts.level)}")
    if facts.exercise:
        parts.append("exercise 演练")
    if facts.addressed_to:
        parts.append(f"addressed to {', '.join(facts.addressed_to)}")
    return ", ".join(parts)


def _describe_record(sample: SampleRecord) -> str:
    return _describe(sample.ref, sample.sender, sample.facts)


def _explain_line(node_id: str, name_zh: str, outcome: NodeOutcome) -> str:
    head = f"{node_id:<6} {name_zh}"
    decision = outcome.decision
    if not outcome.receives:
        return f"{head}\n    kept back by {outcome.rule}: {outcome.reason}"
    withheld = ", ".join(decision.withheld_fields) or "none"
    onward = "no further sharing" if decision.no_further_sharing else "may share on"
    return (
        f"{head}\n    receives under {decision.agreement_id} "
        f"v{decision.agreement_version} ({decision.rule}); withheld: {withheld}; "
        f"{onward}\n    {decision.reason}"
    )


# --- diff ---------------------------------------------------------------------


def run_diff(args: argparse.Namespace) -> int:
    source = args.records or args.config
    try:
        old, new = load_policies(args.old), load_policies(args.new)
        samples = _diff_samples(args)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return 2
    except (GuantongError, ValueError, OSError) as exc:
        print(f"guantong: {source}: {exc}", file=sys.stderr)
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


def _diff_samples(args: argparse.Namespace) -> list[SampleRecord]:
    if args.records is not None:
        return read_sample(read_jsonl(args.records))
    config = load_config(args.config)
    database = ReadOnlyDatabase(config.effective_database_url)
    try:
        return published_samples(database)
    finally:
        database.close()


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


# --- a running node's agreements ----------------------------------------------


def run_reload(args: argparse.Namespace) -> int:
    stub = admin_grpc.AdminStub(local_channel(args))
    response = call(stub.ReloadPolicies, admin.ReloadPoliciesRequest(), timeout=30)
    in_force = _versions(response.agreements)
    if not response.ok:
        print(
            f"refused: {len(response.problems)} problem(s); still in force: {in_force}"
        )
        for problem in response.problems:
            print(f"error: {problem}")
        return 1
    print(f"reloaded: {in_force}")
    for warning in response.warnings:
        print(f"warning: {warning}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    stub = admin_grpc.AdminStub(local_channel(args))
    response = call(stub.PolicyStatus, admin.PolicyStatusRequest(), timeout=30)
    loaded_at = _time(response.loaded_at)
    print(
        f"node {response.node}: {len(response.agreements)} agreement(s) in force, "
        f"loaded {loaded_at}"
    )
    for agreement in response.agreements:
        print(f"  {agreement.id} v{agreement.version}  {agreement.title}")
    if response.HasField("last_refused"):
        refused = response.last_refused
        print(
            f"reload refused at {_time(refused.at)}: {len(refused.problems)} "
            "problem(s); the agreements above stay in force"
        )
        for problem in refused.problems:
            print(f"  error: {problem}")
    for warning in response.warnings:
        print(f"warning: {warning}")
    if not response.mismatches:
        print("no version mismatches seen with peers")
    for mismatch in response.mismatches:
        print(_mismatch_line(mismatch))
    return 0


def _mismatch_line(mismatch: admin.VersionMismatch) -> str:
    """``peer CN-HN enforces central-china v2, we v1 (...)``, in words."""
    agreement = mismatch.agreement_id
    if mismatch.theirs:
        theirs = f"peer {mismatch.peer} enforces {agreement} v{mismatch.theirs}"
    else:
        theirs = f"peer {mismatch.peer} holds no {agreement}"
    ours = f"we v{mismatch.ours}" if mismatch.ours else "we hold none"
    if mismatch.seen_as == "sent":
        details = [f"its answers to {mismatch.messages} message(s) we sent"]
        if mismatch.refused:
            details.append(f"{mismatch.refused} refused there")
        if mismatch.withheld_fields:
            fields = ", ".join(mismatch.withheld_fields)
            details.append(f"it withheld {fields} beyond our copy")
    else:
        details = [f"{mismatch.messages} message(s) it sent here"]
        if mismatch.refused:
            details.append(f"{mismatch.refused} refused here")
    details.append(f"last {_time(mismatch.last_at)}")
    return f"mismatch: {theirs}, {ours} ({'; '.join(details)})"


def _versions(agreements: Sequence[admin.AgreementInForce]) -> str:
    return ", ".join(f"{a.id} v{a.version}" for a in agreements) or "no agreements"


def _time(stamp) -> str:
    return stamp.ToDatetime(UTC).isoformat("T", "seconds")


def _print_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
