"""Commands over a record's life and the libraries: show, retract, close,
statements search, cases search. They talk to a running node's local API."""

from __future__ import annotations

import argparse
from datetime import date, datetime, time, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from guantong.v1 import local_pb2 as api
from guantong.v1 import records_pb2 as pb

from gateway.policy.model import CHINA_TIME
from node.cli.connection import call, connect, connection_options, count_arg
from node.cli.output import print_destinations
from node.errors import GuantongError
from node.records import (
    CATEGORIES,
    CATEGORY_CODES,
    KIND_NAMES,
    LEVEL_LABELS,
    PHASE_CODES,
    PHASES,
    RETRACTED_LABEL,
    STATUS_CODES,
    STATUSES,
    SUPERSEDED_LABEL,
    timestamp,
)

# How much of a long text a listing shows.
EXCERPT_CHARS = 80


def register(commands: argparse._SubParsersAction) -> None:
    common = connection_options()

    show = commands.add_parser(
        "show",
        parents=[common],
        help="a subject's versions, who sent each and when, and where each went",
        description=(
            "List every version of a subject this node holds: who sent it and when, "
            "and on the origin where each version went (or why not). Says whether the "
            "subject is retracted or, for a statement, superseded."
        ),
    )
    show.add_argument("ref")
    show.add_argument(
        "--origin", help="the node that published it (default: this node)"
    )
    show.set_defaults(handler=_show)

    retract = commands.add_parser(
        "retract",
        parents=[common],
        help="withdraw one of this node's subjects everywhere it went",
        description=(
            "Publish a retraction of REF: a new version that reaches every node "
            "holding any version of it, whatever the agreements now say. A retracted "
            "subject takes no more versions."
        ),
    )
    retract.add_argument("ref")
    retract.add_argument("--reason", required=True)
    retract.add_argument("--author-unit", default="")
    retract.set_defaults(handler=_retract)

    forward = commands.add_parser(
        "forward",
        parents=[common],
        help="pass on a record this node received (onward sharing)",
        description=(
            "Relay a record another node published to the nodes given with --to, "
            "or to every node this node's agreements allow. Only records that "
            "arrived under an agreement allowing onward sharing may be passed on, "
            "once; later versions and a retraction follow them."
        ),
    )
    forward.add_argument("ref", help="the publisher's reference")
    forward.add_argument("--origin", required=True, help="the node that published it")
    forward.add_argument("--to", action="append", default=[], dest="to_nodes")
    forward.set_defaults(handler=_forward)

    close = commands.add_parser(
        "close",
        parents=[common],
        help="close one of this node's incidents with its review notes (复盘)",
        description=(
            "Publish a new version of incident REF with status closed and the review "
            "notes; a closed incident with its review is a searchable case."
        ),
    )
    close.add_argument("ref")
    close.add_argument("--review", required=True, help="the review notes (复盘)")
    close.add_argument("--author-unit", default="")
    close.set_defaults(handler=_close)

    statements = commands.add_parser(
        "statements", help="the response statement library (口径库)"
    )
    statements_sub = statements.add_subparsers(
        dest="statements_command", metavar="COMMAND", required=True
    )
    search = statements_sub.add_parser(
        "search",
        parents=[common],
        help="search the statements this node holds, its own and shared ones",
        description=(
            "Statements whose text, keywords or approver contain every word of TEXT "
            "(words separated by spaces; Chinese is matched as written, no "
            "segmentation). Dates are calendar days in China time, both inclusive."
        ),
    )
    _search_arguments(search)
    search.add_argument(
        "--since", type=_day, help="issued on or after this day (YYYY-MM-DD)"
    )
    search.add_argument(
        "--until", type=_day, help="issued on or before this day (YYYY-MM-DD)"
    )
    search.set_defaults(handler=_search_statements)

    cases = commands.add_parser(
        "cases", help="the case library (案例库): closed incidents"
    )
    cases_sub = cases.add_subparsers(
        dest="cases_command", metavar="COMMAND", required=True
    )
    search = cases_sub.add_parser(
        "search",
        parents=[common],
        help="search closed incidents by title, summary and review",
        description=(
            "Closed incidents this node holds whose title, summary, review or keywords "
            "contain every word of TEXT."
        ),
    )
    _search_arguments(search)
    search.set_defaults(handler=_search_cases)


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "text", nargs="?", default="", help="words to find (default: all)"
    )
    parser.add_argument("--category", choices=sorted(CATEGORIES))
    parser.add_argument("--limit", type=count_arg, default=50)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a day like 2025-07-01"
        ) from exc


def _start_of(day: date) -> Timestamp:
    return timestamp(datetime.combine(day, time(), CHINA_TIME))


# --- handlers -------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    request = api.ShowRequest(ref=args.ref, origin=args.origin or "")
    response = call(connect(args).Show, request, timeout=30)
    for line in show_lines(response):
        print(line)
    return 0


def _retract(args: argparse.Namespace) -> int:
    request = api.RetractRequest(
        ref=args.ref, reason=args.reason, author_unit=args.author_unit
    )
    response = call(connect(args).Retract, request, timeout=30)
    print(f"retracted {response.subject_id} at version {response.subject_version}")
    print_destinations(response.destinations)
    return 0


def _forward(args: argparse.Namespace) -> int:
    request = api.ForwardRequest(
        origin=args.origin, ref=args.ref, to_nodes=args.to_nodes
    )
    response = call(connect(args).Forward, request, timeout=30)
    queued = [d for d in response.destinations if d.delivery_state]
    if queued:
        print(f"forwarded {response.subject_id} version {response.subject_version}")
    else:
        print(f"nothing forwarded: no node may receive {response.subject_id} from here")
    print_destinations(response.destinations)
    return 0 if queued else 1


def _close(args: argparse.Namespace) -> int:
    request = api.CloseIncidentRequest(
        ref=args.ref, review=args.review, author_unit=args.author_unit
    )
    response = call(connect(args).CloseIncident, request, timeout=30)
    print(f"closed {response.subject_id} at version {response.subject_version}")
    print_destinations(response.destinations)
    return 0


def _search_statements(args: argparse.Namespace) -> int:
    if args.since and args.until and args.until < args.since:
        raise GuantongError("--until is before --since")
    request = api.SearchStatementsRequest(text=args.text, limit=args.limit)
    if args.category:
        request.category = CATEGORIES[args.category][0]
    if args.since:
        request.since.CopyFrom(_start_of(args.since))
    if args.until:
        request.until.CopyFrom(_start_of(args.until + timedelta(days=1)))
    response = call(connect(args).SearchStatements, request, timeout=30)
    for hit in response.statements:
        for line in statement_lines(hit):
            print(line)
    print(f"{len(response.statements)} statement(s)")
    return 0


def _search_cases(args: argparse.Namespace) -> int:
    request = api.SearchCasesRequest(text=args.text, limit=args.limit)
    if args.category:
        request.category = CATEGORIES[args.category][0]
    response = call(connect(args).SearchCases, request, timeout=30)
    for hit in response.cases:
        for line in case_lines(hit):
            print(line)
    print(f"{len(response.cases)} case(s)")
    return 0


# --- what staff read ------------------------------------------------------------


def show_lines(response: api.ShowResponse) -> list[str]:
    """``guantong show`` as lines of text."""
    marks = []
    if response.retracted:
        reason = response.retraction_reason or "(no reason given)"
        marks.append(f"{RETRACTED_LABEL} at v{response.retracted_version}: {reason}")
    if response.superseded_by:
        marks.append(f"{SUPERSEDED_LABEL} by {response.superseded_by}")
    lines = [
        f"{response.subject_id} · {KIND_NAMES[response.kind]} · "
        f"{len(response.versions)} version(s), newest v{response.latest_version}"
    ]
    lines += [f"  {mark}" for mark in marks]

    newest = response.latest_version
    for version in response.versions:
        sent = (
            f"received from {version.received_from} at {_local(version.stored_at)}"
            if version.received_from
            else "published here"
        )
        later = "" if version.version == newest else f" (superseded by v{newest})"
        author = version.author_unit or "unnamed unit"
        lines.append(
            f"v{version.version} {KIND_NAMES[version.kind]}{later}: created "
            f"{_local(version.created_at)} by {author}, {sent}"
        )
        lines += [f"    {line}" for line in record_lines(version.record)]
        for destination in version.destinations:
            lines.append("  " + destination_line(destination))
    return lines


def record_lines(record: pb.Record) -> list[str]:
    body = record.WhichOneof("body")
    if body == "incident":
        incident = record.incident
        lines = [
            incident.title,
            " · ".join(
                (
                    _category_label(incident.category),
                    LEVEL_LABELS[incident.level],
                    PHASES[PHASE_CODES[incident.phase]][1],
                    STATUSES[STATUS_CODES[incident.status]][1],
                )
            ),
        ]
        if incident.review:
            lines.append(f"复盘 review: {_excerpt(incident.review)}")
        return lines
    if body == "statement":
        statement = record.statement
        lines = [_excerpt(statement.text), f"approved by {statement.approved_by}"]
        if statement.incident_subject:
            lines.append(f"for incident {statement.incident_subject}")
        if statement.topic_category:
            topic = _category_label(statement.topic_category)
            keywords = "、".join(statement.topic_keywords)
            lines.append(f"for topic {topic}" + (f": {keywords}" if keywords else ""))
        if statement.supersedes:
            lines.append(f"supersedes {statement.supersedes}")
        return lines
    if body == "retraction":
        return [f"撤回 retraction: {record.retraction.reason or '(no reason given)'}"]
    return []


def destination_line(d: api.Destination) -> str:
    if d.allowed:
        state = d.delivery_state or d.rule
        withheld = (
            f", withheld: {', '.join(d.withheld_fields)}" if d.withheld_fields else ""
        )
        return (
            f"-> {d.node}: {state} under {d.agreement_id} v{d.agreement_version} "
            f"({d.rule}: {d.reason}){withheld}"
        )
    return f"x  {d.node}: kept back by {d.rule}: {d.reason}"


def statement_lines(hit: api.StatementHit) -> list[str]:
    marks = []
    if hit.superseded_by:
        marks.append(f"{SUPERSEDED_LABEL} by {hit.superseded_by}")
    if hit.retracted:
        marks.append(RETRACTED_LABEL)
    source = f"from {hit.received_from}" if hit.received_from else "own"
    category = _category_label(hit.category) if hit.category else "no category"
    parts = [
        f"{hit.subject_id} v{hit.version} ({source})",
        category,
        _local(hit.issued_at),
    ]
    lines = [" · ".join(parts + marks)]
    lines += [
        f"    {line}" for line in record_lines(pb.Record(statement=hit.statement))
    ]
    return lines


def case_lines(hit: api.CaseHit) -> list[str]:
    source = f"from {hit.received_from}" if hit.received_from else "own"
    mark = f" · {RETRACTED_LABEL}" if hit.retracted else ""
    closed = f"closed {_local(hit.closed_at)}"
    lines = [f"{hit.subject_id} v{hit.version} ({source}) · {closed}{mark}"]
    lines += [f"    {line}" for line in record_lines(pb.Record(incident=hit.incident))]
    return lines


def _category_label(number: int) -> str:
    return CATEGORIES[CATEGORY_CODES[number]][1]


def _local(stamp: Timestamp) -> str:
    """A time as staff read it: China time, to the minute."""
    return stamp.ToDatetime(CHINA_TIME).strftime("%Y-%m-%d %H:%M %z")


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"
