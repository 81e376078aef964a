"""The records bureaus exchange: validation, labels and the facts policy reads.

Records travel as ``guantong.v1.Record`` messages. This module checks one and
reduces it to the few facts an agreement decides on; ``node.record_json``
reads the publisher's JSON shape (the sample file's) into one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from guantong.v1 import records_pb2 as pb

from node.errors import InvalidRecord

# Codes used in files and on the command line, with the labels staff read.
CATEGORIES: dict[str, tuple[pb.Category, str]] = {
    "food_drug_safety": (
        pb.FOOD_DRUG_SAFETY,
        "食品药品(医疗器械)安全事故 food/drug/device safety",
    ),
    "special_equipment": (
        pb.SPECIAL_EQUIPMENT,
        "特种设备安全事故 special-equipment safety",
    ),
    "policy_dispute": (
        pb.POLICY_DISPUTE,
        "政策措施及裁量争议 policy and discretion dispute",
    ),
    "market_violation": (pb.MARKET_VIOLATION, "市场违法行为 market violation"),
    "staff_conduct": (pb.STAFF_CONDUCT, "部门及工作人员作风 conduct of bureau staff"),
    "rumor": (pb.RUMOR, "谣言传播 rumour"),
    "mass_incident": (pb.MASS_INCIDENT, "群体性事件 mass incident"),
    "other": (pb.OTHER, "其他突发事件 other"),
}
LEVEL_LABELS: dict[int, str] = {
    1: "Ⅰ 特别重大 particularly serious",
    2: "Ⅱ 重大 serious",
    3: "Ⅲ 较大 relatively serious",
    4: "Ⅳ 一般 ordinary",
}
PHASES: dict[str, tuple[pb.Phase, str]] = {
    "emerging": (pb.EMERGING, "发生期 emerging"),
    "developing": (pb.DEVELOPING, "发展期 developing"),
    "peak": (pb.PEAK, "高潮期 peak"),
    "fluctuating": (pb.FLUCTUATING, "震荡期 fluctuating"),
    "subsiding": (pb.SUBSIDING, "回落期 subsiding"),
}
STATUSES: dict[str, tuple[pb.IncidentStatus, str]] = {
    "open": (pb.INCIDENT_OPEN, "处置中 open"),
    "closed": (pb.INCIDENT_CLOSED, "已办结 closed"),
}
# How a subject's state reads to staff, beside its kind's own labels.
RETRACTED_LABEL = "已撤回 retracted"
SUPERSEDED_LABEL = "已被替代 superseded"
# Record kinds by the names agreements and files use.
KINDS: dict[str, pb.RecordKind] = {
    "incident": pb.INCIDENT,
    "statement": pb.STATEMENT,
    "joint_request": pb.JOINT_REQUEST,
    "notice": pb.NOTICE,
    "retraction": pb.RETRACTION,
    "request_update": pb.REQUEST_UPDATE,
    "notice_ack": pb.NOTICE_ACK,
    "escalation": pb.ESCALATION,
}
# Kinds judged by their incident's facts when the incident is held, without
# them when not: a request's handler may hold the request but not its
# incident (below the incident flow's threshold), and must still answer.
INCIDENT_OPTIONAL_KINDS = frozenset({"request_update"})
KIND_NAMES: dict[int, str] = {number: name for name, number in KINDS.items()}
CATEGORY_CODES: dict[int, str] = {
    number: code for code, (number, _) in CATEGORIES.items()
}
PHASE_CODES: dict[int, str] = {number: code for code, (number, _) in PHASES.items()}
STATUS_CODES: dict[int, str] = {number: code for code, (number, _) in STATUSES.items()}

_REGION_CODE = re.compile(r"[0-9]{6}")
_NODE_ID = re.compile(r"CN(-[A-Z]{2})?")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_node_id(value: str) -> bool:
    """Node ids are ISO 3166-2 style: ``CN`` or ``CN-XX``."""
    return bool(_NODE_ID.fullmatch(value))


def subject_id(origin: str, ref: str) -> str:
    """The federation-wide id of a publisher's subject."""
    return f"{origin}/{ref}"


def kind_of(record: pb.Record) -> str:
    """The kind name of a record, from the body that is set."""
    body = record.WhichOneof("body")
    if body is None:
        raise InvalidRecord("record", "no body is set (incident, statement, ...)")
    return body


@dataclass(frozen=True)
class RecordFacts:
    """What an agreement decides on, taken from one record.

    Statements and joint-handling requests carry the category, level, heat and
    exercise mark of the incident they belong to, so that an agreement that
    shares an incident also shares what belongs to it.
    """

    kind: str
    origin: str
    category: str | None = None
    level: int | None = None
    exercise: bool = False
    # Totals over every platform of the incident.
    views: int = 0
    reposts: int = 0
    # Nodes a record is addressed to (a request's handler, a notice's list).
    addressed_to: tuple[str, ...] = field(default_factory=tuple)


def incident_facts(kind: str, origin: str, incident: pb.IncidentReport) -> RecordFacts:
    return RecordFacts(
        kind=kind,
        origin=origin,
        category=CATEGORY_CODES.get(incident.category),
        level=int(incident.level) or None,
        exercise=incident.exercise,
        views=sum(p.views for p in incident.platforms),
        reposts=sum(p.reposts for p in incident.platforms),
    )


def facts_of(
    record: pb.Record, origin: str, incident: pb.IncidentReport | None = None
) -> RecordFacts:
    """Facts of ``record``; ``incident`` is the incident it belongs to, if held."""
    kind = kind_of(record)
    if kind == "incident":
        return incident_facts(kind, origin, record.incident)

    addressed: tuple[str, ...] = ()
    if kind == "joint_request":
        addressed = (record.joint_request.to_node,)
    elif kind == "notice":
        addressed = tuple(record.notice.to_nodes)
    elif kind == "request_update":
        addressed = (record.request_update.to_node,)
    elif kind == "notice_ack":
        # An acknowledgement goes back to the notice's origin only.
        addressed = (record.notice_ack.notice_subject.partition("/")[0],)
    elif kind == "escalation":
        addressed = (record.escalation.to_node,)
        # Judged by the incident it carries, which the receiver may not hold.
        if record.escalation.HasField("incident"):
            incident = record.escalation.incident

    if incident is not None:
        base = incident_facts(kind, origin, incident)
        return RecordFacts(**{**base.__dict__, "addressed_to": addressed})
    if kind == "statement" and record.statement.topic_category:
        # A topic statement is judged by its topic's category. It has no level,
        # so a flow with a level condition does not share it (an unknown level
        # fails such a condition): topic statements travel only under flows
        # that do not ask for a level.
        category = CATEGORY_CODES.get(record.statement.topic_category)
        return RecordFacts(kind=kind, origin=origin, category=category)
    return RecordFacts(kind=kind, origin=origin, addressed_to=addressed)


def incident_subject_of(record: pb.Record) -> str | None:
    """The subject id of the incident a statement, request or request update
    belongs to. An escalation carries its incident and is judged by that.
    """
    kind = kind_of(record)
    if kind == "statement":
        return record.statement.incident_subject or None
    if kind == "joint_request":
        return record.joint_request.incident_subject or None
    if kind == "request_update":
        return record.request_update.incident_subject or None
    return None


# Bounds on what one record may carry. A record is read by people under time
# pressure and travels in batches: a summary is a summary, not a dossier.
MAX_TEXT_CHARS = 20_000
MAX_SHORT_CHARS = 200
MAX_ITEMS = 100
# Fields that name or label something rather than tell it.
_SHORT_FIELDS = {
    "title",
    "approved_by",
    "name",
    "entities",
    "keywords",
    "regions",
    "topic_keywords",
    "to_nodes",
    "to_node",
    "incident_subject",
    "supersedes",
    "subject_id",
    "request_subject",
    "notice_subject",
}


def _is_repeated(field: FieldDescriptor) -> bool:
    # Newer protobuf runtimes drop ``label`` for ``is_repeated``.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _check_sizes(message: Message, prefix: str) -> None:
    """Raise InvalidRecord for text too long or a list too long, anywhere."""
    for descriptor, value in message.ListFields():
        name = f"{prefix}.{descriptor.name}"
        repeated = _is_repeated(descriptor)
        values = list(value) if repeated else [value]
        if repeated and len(values) > MAX_ITEMS:
            raise InvalidRecord(name, f"at most {MAX_ITEMS} items, got {len(values)}")
        for item in values:
            if isinstance(item, Message):
                _check_sizes(item, name)
            elif isinstance(item, str):
                limit = (
                    MAX_SHORT_CHARS
                    if descriptor.name in _SHORT_FIELDS
                    else MAX_TEXT_CHARS
                )
                if len(item) > limit:
                    raise InvalidRecord(
                        name, f"at most {limit} characters, got {len(item)}"
                    )


def validate(record: pb.Record) -> None:
    """Raise InvalidRecord naming the first field that is wrong."""
    kind = kind_of(record)
    _check_sizes(getattr(record, kind), kind)
    if kind == "incident":
        _validate_incident(record.incident)
    elif kind == "statement":
        _validate_statement(record.statement)
    elif kind == "joint_request":
        request = record.joint_request
        _require(request.incident_subject, "joint_request.incident_subject")
        _require(request.ask, "joint_request.ask")
        if not is_node_id(request.to_node):
            raise InvalidRecord(
                "joint_request.to_node", f"not a node id: {request.to_node!r}"
            )
        # Without due_at the publishing node sets it (node.workflow.deadlines).
        if not request.due_within_hours >= 0:
            raise InvalidRecord("joint_request.due_within_hours", "must be > 0 hours")
    elif kind == "notice":
        _require(record.notice.title, "notice.title")
        for node in record.notice.to_nodes:
            if not is_node_id(node):
                raise InvalidRecord("notice.to_nodes", f"not a node id: {node!r}")
    elif kind == "retraction":
        _require(record.retraction.subject_id, "retraction.subject_id")
        _require(record.retraction.reason, "retraction.reason")
    elif kind == "request_update":
        _validate_request_update(record.request_update)
    elif kind == "notice_ack":
        _require(record.notice_ack.notice_subject, "notice_ack.notice_subject")
    elif kind == "escalation":
        _validate_escalation(record.escalation)


def validate_ref(ref: str) -> None:
    if not _REF.fullmatch(ref or ""):
        raise InvalidRecord(
            "ref",
            f"{ref!r} is not a reference (letters, digits, '.', '_', '-'; at most 64)",
        )


def _validate_request_update(update: pb.RequestUpdate) -> None:
    """The shape only; whether the move is allowed is node.workflow.requests'."""
    _require(update.request_subject, "request_update.request_subject")
    _require(update.incident_subject, "request_update.incident_subject")
    if not is_node_id(update.to_node):
        raise InvalidRecord(
            "request_update.to_node", f"not a node id: {update.to_node!r}"
        )
    if update.action == pb.REQUEST_ACTION_UNSPECIFIED:
        raise InvalidRecord("request_update.action", "is required")


def _validate_escalation(escalation: pb.Escalation) -> None:
    _require(escalation.incident_subject, "escalation.incident_subject")
    _require(escalation.reason, "escalation.reason")
    if not is_node_id(escalation.to_node):
        raise InvalidRecord(
            "escalation.to_node", f"not a node id: {escalation.to_node!r}"
        )
    if not escalation.HasField("incident"):
        raise InvalidRecord("escalation.incident", "the incident as held is required")


def _require(value: str, name: str) -> None:
    if not value or not value.strip():
        raise InvalidRecord(name, "is required and must not be blank")


def _validate_statement(statement: pb.ResponseStatement) -> None:
    _require(statement.text, "statement.text")
    _require(statement.approved_by, "statement.approved_by")
    topic = statement.topic_category
    if topic and topic not in CATEGORY_CODES:
        raise InvalidRecord(
            "statement.topic_category", f"unknown category number {topic}"
        )
    if statement.incident_subject and (topic or statement.topic_keywords):
        raise InvalidRecord(
            "statement.topic_category",
            "a statement answers an incident or a topic, not both",
        )
    if statement.topic_keywords and not topic:
        raise InvalidRecord(
            "statement.topic_category", "a topic's keywords need its category"
        )


def _validate_incident(incident: pb.IncidentReport) -> None:
    _require(incident.title, "incident.title")
    if incident.category not in CATEGORY_CODES:
        raise InvalidRecord(
            "incident.category", f"unknown category number {incident.category}"
        )
    if incident.level not in LEVEL_LABELS:
        raise InvalidRecord("incident.level", f"must be 1 to 4, got {incident.level}")
    if incident.phase not in PHASE_CODES:
        raise InvalidRecord("incident.phase", f"unknown phase number {incident.phase}")
    for code in incident.regions:
        if not _REGION_CODE.fullmatch(code):
            raise InvalidRecord(
                "incident.regions", f"{code!r} is not a six-digit administrative code"
            )
    if incident.status not in STATUS_CODES:
        raise InvalidRecord(
            "incident.status", f"unknown status number {incident.status}"
        )
    if incident.status == pb.INCIDENT_CLOSED and not incident.review.strip():
        raise InvalidRecord(
            "incident.review", "a closed incident needs its review notes (复盘)"
        )


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp
