"""The state machine's names on the wire: proto enums to and from
:mod:`node.workflow.requests`, and the refs this node gives its workflow
records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from guantong.v1 import records_pb2 as pb

from node.workflow.requests import Action, Disposition, Handling, RequestState

_REF_LIMIT = 64


def action_from_pb(value: int) -> Action:
    """Raises ValueError for an unspecified or unknown action."""
    name = pb.RequestAction.Name(value)
    if not name.startswith("ACTION_"):
        raise ValueError(f"no action: {name}")
    return Action[name.removeprefix("ACTION_")]


def action_to_pb(action: Action) -> pb.RequestAction:
    return pb.RequestAction.Value(f"ACTION_{action.name}")


def handling_to_pb(handling: Handling) -> pb.Handling:
    return pb.Handling.Value(f"HANDLING_{handling.value}")


def disposition_to_pb(disposition: Disposition) -> pb.Disposition:
    return pb.Disposition.Value(f"DISPOSITION_{disposition.value}")


def state_from_update(update: pb.RequestUpdate) -> RequestState:
    """The state the mover saw; ValueError if either part is unspecified."""
    handling = pb.Handling.Name(update.from_handling).removeprefix("HANDLING_")
    disposition = pb.Disposition.Name(update.from_disposition).removeprefix(
        "DISPOSITION_"
    )
    return RequestState(Handling(handling), Disposition(disposition))


def time_of(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def workflow_ref(about: str, what: str) -> str:
    """A fresh ref for a record about ``about`` (a ref or subject id).

    ``HB-DRILL-01-R1.accept.3f9a2c1b``: readable, unique, and within the
    64 characters a ref may have.
    """
    suffix = f".{what}.{uuid.uuid4().hex[:8]}"
    base = about.rpartition("/")[2][: _REF_LIMIT - len(suffix)]
    return base + suffix
