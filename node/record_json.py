"""The publisher's JSON shape of a record: one line of the sample file.

``record_from_json`` turns such a mapping into a ``Record``, naming the key at
fault when it cannot; references to incidents (``incident_ref``) name the
publisher's own subjects. The record model itself is in ``node.records``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from guantong.v1 import records_pb2 as pb

from node.errors import InvalidRecord
from node.records import (
    CATEGORIES,
    LEVEL_LABELS,
    PHASES,
    STATUSES,
    is_node_id,
    subject_id,
    timestamp,
    validate,
    validate_ref,
)

_COMMON_KEYS = {"ref", "node", "kind"}
_KEYS = {
    "incident": {
        "title",
        "summary",
        "category",
        "level",
        "phase",
        "status",
        "regions",
        "entities",
        "platforms",
        "keywords",
        "first_seen",
        "exercise",
        "review",
    },
    "statement": {
        "text",
        "approved_by",
        "incident_ref",
        "category",
        "keywords",
        "supersedes",
    },
    "joint_request": {"incident_ref", "to", "ask", "due_at", "due_within_hours"},
    "notice": {"title", "body", "to"},
}


def record_from_json(data: dict[str, Any], origin: str) -> tuple[str, pb.Record]:
    """Turn one line of the sample file's shape into ``(ref, Record)``.

    References to incidents (``incident_ref``) name the publisher's own
    subjects and become subject ids of ``origin``. Raises InvalidRecord.
    """
    ref = data.get("ref")
    if not isinstance(ref, str):
        raise InvalidRecord("ref", "is required")
    validate_ref(ref)
    kind = data.get("kind", "incident")
    builders = {
        "incident": _incident_from_json,
        "statement": _statement_from_json,
        "joint_request": _request_from_json,
        "notice": _notice_from_json,
    }
    if kind not in builders:
        raise InvalidRecord(
            "kind", f"unknown kind {kind!r}; one of {', '.join(builders)}"
        )
    unknown = sorted(set(data) - _COMMON_KEYS - _KEYS[kind])
    if unknown:
        # A misspelt key would otherwise vanish without a word.
        raise InvalidRecord(
            unknown[0],
            f"is not a field of a {kind}; known: {', '.join(sorted(_KEYS[kind]))}",
        )
    record = builders[kind](data, origin)
    validate(record)
    return ref, record


def _incident_from_json(data: dict[str, Any], origin: str) -> pb.Record:
    category = data.get("category")
    if category not in CATEGORIES:
        raise InvalidRecord(
            "category", f"unknown category {category!r}; one of {', '.join(CATEGORIES)}"
        )
    level = data.get("level")
    if (
        not isinstance(level, int)
        or isinstance(level, bool)
        or level not in LEVEL_LABELS
    ):
        raise InvalidRecord("level", f"must be a whole number 1 to 4, got {level!r}")
    phase = data.get("phase", "emerging")
    if phase not in PHASES:
        raise InvalidRecord(
            "phase", f"unknown phase {phase!r}; one of {', '.join(PHASES)}"
        )
    status = data.get("status", "open")
    if status not in STATUSES:
        raise InvalidRecord(
            "status", f"unknown status {status!r}; one of {', '.join(STATUSES)}"
        )
    incident = pb.IncidentReport(
        title=_text(data, "title"),
        summary=_text(data, "summary", required=False),
        category=CATEGORIES[category][0],
        # protoc's stub takes only RiskLevel members; the field takes any int.
        level=level,  # type: ignore[arg-type]
        phase=PHASES[phase][0],
        regions=_strings(data, "regions"),
        entities=_strings(data, "entities"),
        keywords=_strings(data, "keywords"),
        exercise=_bool(data, "exercise"),
        status=STATUSES[status][0],
        review=_text(data, "review", required=False),
    )
    for i, platform in enumerate(data.get("platforms") or []):
        if not isinstance(platform, dict) or not isinstance(platform.get("name"), str):
            raise InvalidRecord(f"platforms[{i}]", "needs a name")
        heat = {}
        for metric in ("views", "reposts", "comments"):
            value = platform.get(metric, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRecord(
                    f"platforms[{i}].{metric}", "must be a whole number >= 0"
                )
            heat[metric] = value
        incident.platforms.add(name=platform["name"], **heat)
    if "first_seen" in data:
        incident.first_seen.CopyFrom(timestamp(_datetime(data, "first_seen")))
    return pb.Record(incident=incident)


def _statement_from_json(data: dict[str, Any], origin: str) -> pb.Record:
    """A statement for an incident (``incident_ref``) or for a topic
    (``category`` and ``keywords``)."""
    statement = pb.ResponseStatement(
        text=_text(data, "text"),
        approved_by=_text(data, "approved_by"),
    )
    if data.get("incident_ref"):
        if "category" in data or "keywords" in data:
            raise InvalidRecord(
                "category",
                "a statement answers an incident (incident_ref) or a topic "
                "(category, keywords), not both",
            )
        statement.incident_subject = subject_id(origin, _text(data, "incident_ref"))
    if "category" in data:
        category = data["category"]
        if category not in CATEGORIES:
            raise InvalidRecord(
                "category",
                f"unknown category {category!r}; one of {', '.join(CATEGORIES)}",
            )
        statement.topic_category = CATEGORIES[category][0]
        statement.topic_keywords.extend(_strings(data, "keywords"))
    elif "keywords" in data:
        raise InvalidRecord("keywords", "a topic statement needs its category too")
    if data.get("supersedes"):
        statement.supersedes = subject_id(origin, _text(data, "supersedes"))
    return pb.Record(statement=statement)


def _request_from_json(data: dict[str, Any], origin: str) -> pb.Record:
    to_node = _text(data, "to")
    if not is_node_id(to_node):
        raise InvalidRecord("to", f"not a node id: {to_node!r}")
    if to_node == origin:
        raise InvalidRecord(
            "to", f"a request goes to another node, not to {origin} itself"
        )
    request = pb.JointHandlingRequest(
        incident_subject=subject_id(origin, _text(data, "incident_ref")),
        to_node=to_node,
        ask=_text(data, "ask"),
    )
    # Without either, the publishing node sets the deadline from the
    # incident's level; with due_within_hours it counts on its own clock.
    if "due_at" in data and "due_within_hours" in data:
        raise InvalidRecord("due_at", "give due_at or due_within_hours, not both")
    if "due_at" in data:
        request.due_at.CopyFrom(timestamp(_datetime(data, "due_at")))
    if "due_within_hours" in data:
        hours = data["due_within_hours"]
        if not isinstance(hours, int | float) or isinstance(hours, bool) or hours <= 0:
            raise InvalidRecord(
                "due_within_hours", f"must be a number of hours > 0, got {hours!r}"
            )
        request.due_within_hours = hours
    return pb.Record(joint_request=request)


def _notice_from_json(data: dict[str, Any], origin: str) -> pb.Record:
    return pb.Record(
        notice=pb.Notice(
            title=_text(data, "title"),
            body=_text(data, "body", required=False),
            to_nodes=_strings(data, "to"),
        )
    )


def _text(data: dict[str, Any], key: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidRecord(key, "is required and must be text")
    return value


def _strings(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRecord(key, "must be a list of text")
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidRecord(key, "must be true or false")
    return value


def _datetime(data: dict[str, Any], key: str) -> datetime:
    try:
        value = datetime.fromisoformat(data[key])
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(key, "must be an ISO 8601 time with offset") from exc
    if value.tzinfo is None:
        raise InvalidRecord(key, "needs a UTC offset, e.g. +08:00")
    return value
