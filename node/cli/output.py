"""How commands show records and where they went, for staff to read."""

from __future__ import annotations

import json

from google.protobuf import json_format
from guantong.v1 import local_pb2 as api
from guantong.v1 import records_pb2 as pb

from node.records import (
    CATEGORIES,
    CATEGORY_CODES,
    KIND_NAMES,
    LEVEL_LABELS,
    PHASE_CODES,
    PHASES,
    kind_of,
)


def print_destinations(destinations) -> None:
    for d in destinations:
        if d.allowed:
            withheld = (
                f", withheld: {', '.join(d.withheld_fields)}"
                if d.withheld_fields
                else ""
            )
            state = d.delivery_state or d.rule
            print(
                f"  -> {d.node}: {state} under {d.agreement_id} v{d.agreement_version}"
                f" ({d.rule}){withheld}"
            )
        else:
            print(f"  x  {d.node}: kept back by {d.rule}: {d.reason}")


def print_message(message: api.StoredMessage, as_json: bool) -> None:
    envelope = message.envelope
    if as_json:
        print(
            json.dumps(
                {
                    "seq": message.seq,
                    "received_from": message.received_from,
                    "envelope": json_format.MessageToDict(
                        envelope,
                        preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=False,
                    )
                    | {"payload": None},
                    "record": json_format.MessageToDict(
                        message.record, preserving_proto_field_name=True
                    ),
                },
                ensure_ascii=False,
            )
        )
        return
    drill = " [演练 exercise]" if envelope.exercise else ""
    print(
        f"#{message.seq} from {message.received_from}: {KIND_NAMES[envelope.kind]} "
        f"{envelope.ref} v{envelope.subject_version} ({envelope.origin_node}){drill}"
    )
    record = message.record
    if kind_of(record) == "incident":
        incident = record.incident
        print(f"    {incident.title}")
        print(
            f"    {CATEGORIES[CATEGORY_CODES[incident.category]][1]} · "
            f"{LEVEL_LABELS[incident.level]} · {PHASES[PHASE_CODES[incident.phase]][1]}"
        )
    elif kind_of(record) == "escalation":
        escalation = record.escalation
        print(
            f"    提级 escalated {escalation.incident_subject}: "
            f"{escalation.incident.title} · {escalation.reason}"
        )
    elif kind_of(record) == "request_update":
        update = record.request_update
        action = pb.RequestAction.Name(update.action).removeprefix("ACTION_").lower()
        print(
            f"    {action} {update.request_subject}"
            + (f": {update.text}" if update.text else "")
        )
    elif kind_of(record) == "notice":
        print(f"    通报 {record.notice.title}")
    if envelope.withheld_fields:
        print(
            f"    withheld under {envelope.agreement_id}: "
            f"{', '.join(envelope.withheld_fields)}"
        )
