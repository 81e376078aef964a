"""``guantong notices`` (通报) and ``guantong escalate`` / ``escalations``
(提级发声) on a running node.

The national node sends notices to every province or to chosen ones and sees
who has and has not acknowledged; a province acknowledges what it received.
A province escalates an incident to the national node with a reason; the
national node lists the escalations it received.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from guantong.v1 import workflow_pb2 as wf
from guantong.v1 import workflow_pb2_grpc as wf_grpc

from gateway.policy.model import CHINA_TIME
from node.cli.connection import call, connection_options, local_channel
from node.cli.output import print_destinations
from node.records import CATEGORIES, CATEGORY_CODES, LEVEL_LABELS


def register(commands: argparse._SubParsersAction) -> None:
    common = connection_options()
    notices = commands.add_parser(
        "notices",
        help="notices (通报): send, acknowledge, and see who acknowledged",
        description=(
            "Notices from the national node to the provinces. NOTICE is the notice's "
            "subject id (CN/TB-2025-07) or, when unambiguous here, its ref."
        ),
    )
    sub = notices.add_subparsers(
        dest="notices_command", metavar="COMMAND", required=True
    )

    send = sub.add_parser(
        "send", parents=[common], help="send a notice to every province or chosen ones"
    )
    send.add_argument("--title", required=True)
    send.add_argument("--body", default="")
    send.add_argument(
        "--to",
        action="append",
        default=[],
        dest="to_nodes",
        metavar="NODE",
        help="a node to send it to (repeat); default: every node an agreement reaches",
    )
    send.add_argument("--ref", default="", help="the notice's ref (default: made up)")
    send.add_argument("--author-unit", default="")
    send.set_defaults(handler=_send)

    ack = sub.add_parser("ack", parents=[common], help="acknowledge a notice received")
    ack.add_argument("notice")
    ack.add_argument("--note", default="", dest="text")
    ack.add_argument("--author-unit", default="")
    ack.set_defaults(handler=_ack)

    listing = sub.add_parser(
        "list",
        parents=[common],
        help="notices sent (who acknowledged, who not) and received",
    )
    listing.set_defaults(handler=_list)

    escalate = commands.add_parser(
        "escalate",
        parents=[common],
        help="escalate an incident to the national node, with a reason (提级)",
        description=(
            "Raise an incident this node holds to the national node. REF is this "
            "node's incident ref, or the subject id of an incident received. The "
            "escalation carries the incident, so the national node sees it even if "
            "it was below the reporting levels."
        ),
    )
    escalate.add_argument("ref")
    escalate.add_argument("--reason", required=True)
    escalate.add_argument(
        "--to", default="", help="default: the configured national node"
    )
    escalate.add_argument("--author-unit", default="")
    escalate.set_defaults(handler=_escalate)

    escalations = commands.add_parser(
        "escalations",
        parents=[common],
        help="escalations this node sent and received, newest first",
    )
    escalations.set_defaults(handler=_escalations)


def _stub(args: argparse.Namespace) -> wf_grpc.WorkflowStub:
    return wf_grpc.WorkflowStub(local_channel(args))


def _send(args: argparse.Namespace) -> int:
    response = call(
        _stub(args).SendNotice,
        wf.SendNoticeRequest(
            ref=args.ref,
            title=args.title,
            body=args.body,
            to_nodes=args.to_nodes,
            author_unit=args.author_unit,
        ),
        timeout=30,
    )
    print(f"sent notice {response.notice.subject_id}")
    print_destinations(response.destinations)
    return 0


def _ack(args: argparse.Namespace) -> int:
    response = call(
        _stub(args).AcknowledgeNotice,
        wf.AcknowledgeNoticeRequest(
            notice=args.notice, text=args.text, author_unit=args.author_unit
        ),
        timeout=30,
    )
    print(f"acknowledged notice {response.notice.subject_id} (已确认)")
    print_destinations(response.destinations)
    return 0


def _list(args: argparse.Namespace) -> int:
    response = call(_stub(args).ListNotices, wf.ListNoticesRequest(), timeout=30)
    for notice in response.notices:
        print_notice(notice)
    print(f"{len(response.notices)} notice(s)")
    return 0


def print_notice(notice: wf.NoticeView) -> None:
    sent_at = _time(notice.sent_at.ToDatetime(tzinfo=CHINA_TIME))
    if notice.direction == wf.DIRECTION_SENT:
        print(f"{notice.subject_id}  发出 sent {sent_at}  {notice.title}")
        acked = [t for t in notice.targets if t.acknowledged]
        pending = [t.node for t in notice.targets if not t.acknowledged]
        print(
            f"    已确认 acknowledged ({len(acked)}): "
            + (", ".join(_acknowledgement(t) for t in acked) or "none yet")
        )
        print(f"    未确认 pending ({len(pending)}): {', '.join(pending) or 'none'}")
        return
    print(f"{notice.subject_id}  收到 from {notice.origin} {sent_at}  {notice.title}")
    if notice.acknowledged:
        at = _time(notice.acknowledged_at.ToDatetime(tzinfo=CHINA_TIME))
        print(f"    已确认 acknowledged {at}")
    else:
        print("    未确认 not acknowledged: guantong notices ack " + notice.subject_id)


def _acknowledgement(target: wf.NoticeTarget) -> str:
    at = target.acknowledged_at.ToDatetime(tzinfo=CHINA_TIME).strftime("%m-%d %H:%M")
    note = f" “{target.text}”" if target.text else ""
    return f"{target.node} {at}{note}"


def _escalate(args: argparse.Namespace) -> int:
    response = call(
        _stub(args).EscalateIncident,
        wf.EscalateIncidentRequest(
            incident=args.ref,
            reason=args.reason,
            to_node=args.to,
            author_unit=args.author_unit,
        ),
        timeout=30,
    )
    escalation = response.escalation
    print(
        f"escalated {escalation.incident_subject} to {escalation.to_node} "
        f"({escalation.subject_id})"
    )
    print_destinations(response.destinations)
    return 0


def _escalations(args: argparse.Namespace) -> int:
    response = call(
        _stub(args).ListEscalations, wf.ListEscalationsRequest(), timeout=30
    )
    for escalation in response.escalations:
        print_escalation(escalation)
    print(f"{len(response.escalations)} escalation(s)")
    return 0


def print_escalation(escalation: wf.EscalationView) -> None:
    at = _time(escalation.escalated_at.ToDatetime(tzinfo=CHINA_TIME))
    way = "发出 sent" if escalation.direction == wf.DIRECTION_SENT else "收到 received"
    route = f"{escalation.origin} -> {escalation.to_node}"
    print(f"{escalation.subject_id}  {way} {route}  {at}")
    incident = escalation.incident
    facts = [incident.title]
    if incident.category in CATEGORY_CODES:
        facts.append(CATEGORIES[CATEGORY_CODES[incident.category]][1])
    if incident.level in LEVEL_LABELS:
        facts.append(LEVEL_LABELS[incident.level])
    if incident.exercise:
        facts.append("演练 exercise")
    held = (
        "" if escalation.incident_held else " (as escalated; not otherwise held here)"
    )
    print(f"    事件 incident {escalation.incident_subject}{held}: {' · '.join(facts)}")
    if incident.summary:
        print(f"    摘要 summary: {incident.summary}")
    if escalation.request_subject:
        print(f"    请求 request: {escalation.request_subject}")
    print(f"    理由 reason: {escalation.reason}")


def _time(value: datetime) -> str:
    return value.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M (UTC+8)")
