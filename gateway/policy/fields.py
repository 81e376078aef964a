"""Field-level control: which body fields an agreement may withhold, and how.

Agreements name fields by the record body they belong to, e.g.
``incident.entities`` or ``statement.approved_by``; these are the names the
envelope's ``withheld_fields`` carries too. A withheld field is *cleared* in a
copy of the record, so the receiver finds it absent (``HasField`` is false, a
list is empty) rather than filled with a placeholder that looks like data.

Some fields can never be withheld, because receivers need them to decide and
to route: an incident's category, level and exercise mark (the receiver's
own agreement check reads them, and an exercise must stay marked), and the
references that tie a statement or request to its incident, a request to its
handler, a notice to its addressees and a retraction to what it withdraws.

A record left without substance after withholding (an incident with neither
title nor summary, a statement without text, a request without its ask, a
notice with neither title nor body) is not worth sending; apply_withholding
returns None for it and the sender drops that delivery.
"""

from __future__ import annotations

from collections.abc import Sequence

from guantong.v1 import records_pb2

# Fields an agreement may withhold, by body.
WITHHOLDABLE: dict[str, frozenset[str]] = {
    "incident": frozenset(
        {
            "title",
            "summary",
            "phase",
            "regions",
            "entities",
            "platforms",
            "keywords",
            "first_seen",
            # Gap (issue 3): not yet "review" (复盘 notes of a closed
            # incident), so an agreement cannot keep review notes back; adding
            # it needs a case in the withholding tests at a real receiver.
        }
    ),
    "statement": frozenset({"text", "approved_by", "supersedes"}),
    "joint_request": frozenset({"ask"}),
    "notice": frozenset({"title", "body"}),
    "retraction": frozenset({"reason"}),
}

# Fields that can never be withheld, with the reason an admin is told.
PROTECTED: dict[str, str] = {
    "incident.category": "receivers check the category against their agreement",
    "incident.level": "receivers check the level against their agreement",
    "incident.exercise": "an exercise must stay marked as one everywhere",
    "statement.incident_subject": "it ties the statement to its incident",
    "joint_request.incident_subject": "it ties the request to its incident",
    "joint_request.to_node": "it names the node asked to act",
    "joint_request.due_at": "the handler needs the deadline",
    "notice.to_nodes": "it names who the notice is for",
    "retraction.subject_id": "it names what is withdrawn",
}

# Per body, the fields of which at least one must remain for it to be sent.
SUBSTANCE: dict[str, tuple[str, ...]] = {
    "incident": ("title", "summary"),
    "statement": ("text",),
    "joint_request": ("ask",),
    "notice": ("title", "body"),
    "retraction": ("subject_id",),
}


def withholdable_names() -> list[str]:
    """Every qualified field name an agreement may list, sorted."""
    return sorted(
        f"{body}.{name}" for body, names in WITHHOLDABLE.items() for name in names
    )


def check_field_name(name: str) -> str | None:
    """None if ``name`` may be withheld, else what is wrong with it in words."""
    if name in PROTECTED:
        return f"{name} cannot be withheld: {PROTECTED[name]}"
    body, _, field_name = name.partition(".")
    if field_name in WITHHOLDABLE.get(body, ()):
        return None
    if body not in WITHHOLDABLE:
        return (
            f"unknown field {name!r}: a field is named by its record kind, "
            f"e.g. incident.entities; kinds are {', '.join(WITHHOLDABLE)}"
        )
    allowed = ", ".join(sorted(f"{body}.{n}" for n in WITHHOLDABLE[body]))
    return f"unknown field {name!r}; {body} fields that can be withheld: {allowed}"


def apply_withholding(
    record: records_pb2.Record, fields: Sequence[str]
) -> records_pb2.Record | None:
    """A copy of ``record`` with ``fields`` cleared; None if nothing is left.

    Names of another body than the record's are ignored, so one agreement's
    list can be applied to any record. Raises ValueError for a field that can
    never be withheld (the loader refuses agreements that try).
    """
    body_name = record.WhichOneof("body")
    copy = records_pb2.Record()
    copy.CopyFrom(record)
    if body_name is None:
        return copy

    body = getattr(copy, body_name)
    for name in fields:
        problem = check_field_name(name)
        if problem is not None:
            raise ValueError(problem)
        kind, _, field_name = name.partition(".")
        if kind == body_name:
            body.ClearField(field_name)

    if not any(_is_set(body, name) for name in SUBSTANCE[body_name]):
        return None
    return copy


def _is_set(message: object, name: str) -> bool:
    value = getattr(message, name)
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value)
