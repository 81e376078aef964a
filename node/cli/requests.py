"""``guantong requests``: joint-handling requests (协作处置) on a running node.

``list`` shows what this node sent and received, with each request's state
and the time left for the first fast report (速报); the others are moves,
made as this node's party to the request: the handler acknowledges,
accepts, declines, reports; the requester closes or escalates.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from google.protobuf import json_format
from guantong.v1 import records_pb2 as pb
from guantong.v1 import workflow_pb2 as wf
from guantong.v1 import workflow_pb2_grpc as wf_grpc

from gateway.policy.model import CHINA_TIME
from node.cli.connection import call, connection_options, local_channel
from node.cli.output import print_destinations
from node.records import LEVEL_LABELS
from node.workflow.requests import ACTION_LABELS, Action

# (command, action, what its text is called, whether the text is required)
_MOVES = (
    ("ack", Action.ACKNOWLEDGE, "--note", False),
    ("accept", Action.ACCEPT, "--note", False),
    ("decline", Action.DECLINE, "--reason", True),
    ("close", Action.CLOSE, "--note", False),
    ("escalate", Action.ESCALATE, "--reason", True),
)
_HELP = {
    Action.ACKNOWLEDGE: "as handler: acknowledge receipt (签收)",
    Action.ACCEPT: "as handler: accept the request (受理)",
    Action.DECLINE: "as handler: decline it, with a reason (拒绝)",
    Action.CLOSE: "as requester: close it (办结)",
    Action.ESCALATE: "as requester: escalate it to the national node (提级)",
}


def register(commands: argparse._SubParsersAction) -> None:
    common = connection_options()
    requests = commands.add_parser(
        "requests",
        help="joint-handling requests: list them, move them through their lifecycle",
        description=(
            "Joint-handling requests (协作处置) this node sent or received. The "
            "handler acknowledges, accepts or declines, and reports progress and the "
            "result; "
            "the requester closes or escalates. REF is the request's subject id "
            "(CN-HB/HB-DRILL-01-R1) or, when unambiguous here, its ref."
        ),
    )
    sub = requests.add_subparsers(
        dest="requests_command", metavar="COMMAND", required=True
    )

    listing = sub.add_parser(
        "list",
        parents=[common],
        help="requests sent and received, with state and time left",
    )
    listing.add_argument("--all", action="store_true", help="closed requests too")
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per request"
    )
    listing.set_defaults(handler=_list)

    for name, action, text_flag, required in _MOVES:
        move = sub.add_parser(name, parents=[common], help=_HELP[action])
        move.add_argument("ref")
        move.add_argument(text_flag, dest="text", required=required, default="")
        move.add_argument("--author-unit", default="")
        move.set_defaults(handler=_move, action=action)

    report = sub.add_parser(
        "report",
        parents=[common],
        help="as handler: report progress (速报) or the result (结果反馈)",
    )
    report.add_argument("ref")
    kind = report.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--progress", help="a progress report; the first meets the deadline"
    )
    kind.add_argument("--result", help="the result; the handler's last move")
    report.add_argument("--author-unit", default="")
    report.set_defaults(handler=_report)


def _stub(args: argparse.Namespace) -> wf_grpc.WorkflowStub:
    return wf_grpc.WorkflowStub(local_channel(args))


def _list(args: argparse.Namespace) -> int:
    response = call(
        _stub(args).ListRequests,
        wf.ListRequestsRequest(include_closed=args.all),
        timeout=30,
    )
    if args.json:
        for view in response.requests:
            print(
                json.dumps(
                    json_format.MessageToDict(view, preserving_proto_field_name=True),
                    ensure_ascii=False,
                )
            )
        return 0
    for view in response.requests:
        print_request(view)
    now = response.now.ToDatetime(tzinfo=CHINA_TIME)
    print(f"{len(response.requests)} request(s); node time {_time(now)}")
    return 0


def _move(args: argparse.Namespace) -> int:
    return _transition(args, args.action, args.text)


def _report(args: argparse.Namespace) -> int:
    if args.result is not None:
        return _transition(args, Action.REPORT_RESULT, args.result)
    return _transition(args, Action.REPORT_PROGRESS, args.progress)


def _transition(args: argparse.Namespace, action: Action, text: str) -> int:
    response = call(
        _stub(args).Transition,
        wf.TransitionRequest(
            request=args.ref,
            action=pb.RequestAction.Value(f"ACTION_{action.name}"),
            text=text,
            author_unit=args.author_unit,
        ),
        timeout=30,
    )
    view = response.request
    print(f"{view.subject_id}: {ACTION_LABELS[action]} -> {view.state_label}")
    print_destinations(response.destinations)
    if response.escalation_subject:
        print(f"escalation {response.escalation_subject}:")
        print_destinations(response.escalation_destinations)
    elif action is Action.ESCALATE:
        print("the escalation record is not out yet; the deadline checker sends it")
    return 0


def print_request(view: wf.RequestView) -> None:
    if view.direction == wf.DIRECTION_SENT:
        direction = f"发出 sent -> {view.handler}"
    else:
        direction = f"收到 received <- {view.requester}"
    drill = " [演练 exercise]" if view.exercise else ""
    print(f"{view.subject_id}  {direction}  {view.state_label}{drill}")

    level = LEVEL_LABELS.get(view.level, "level unknown here")
    title = view.incident_title or "(incident not held here)"
    print(f"    事件 incident {view.incident_subject}: {title} · {level}")
    print(f"    请求 ask: {view.ask}")
    print(f"    {deadline_line(view)}")
    for label, text in (
        ("结果 result", view.result),
        ("拒绝理由 declined", view.decline_reason),
        ("提级理由 escalated", view.escalation_reason),
    ):
        if text:
            print(f"    {label}: {text}")
    if view.escalation_subject:
        print(f"    提级记录 escalation record: {view.escalation_subject}")
    if view.allowed_actions:
        names = ", ".join(
            ACTION_LABELS[Action[pb.RequestAction.Name(a).removeprefix("ACTION_")]]
            for a in view.allowed_actions
        )
        print(f"    next: {names}")


def deadline_line(view: wf.RequestView) -> str:
    """When the first report is due and how it stands, in China time."""
    due = f"时限 due {_time(view.due_at.ToDatetime(tzinfo=CHINA_TIME))}"
    if view.overdue:
        return f"{due} · 逾期 OVERDUE by {duration(-view.seconds_left)}"
    if view.awaiting_first_report:
        return f"{due} · 剩余 time left {duration(view.seconds_left)}"
    if view.first_report_at.seconds:
        reported = view.first_report_at.ToDatetime(tzinfo=CHINA_TIME)
        late = " (late)" if view.first_report_at.seconds > view.due_at.seconds else ""
        return f"{due} · 首报 first report {_time(reported)}{late}"
    return f"{due} · no report owed"


def duration(seconds: int) -> str:
    """``2 h 05 min``; ``45 s`` under a minute."""
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _time(value: datetime) -> str:
    return value.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M (UTC+8)")
