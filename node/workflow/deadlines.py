"""Deadlines of joint-handling requests, and the checker that watches them.

A request's deadline is for the handler's first fast report (速报): a
progress report or the result meets it, a decline or a close ends it. The
requester's node sets it when the request is published, with its own clock:

1. ``due_at`` given by the publisher: kept, if it is in the future;
2. ``due_within_hours`` given: that many hours from now;
3. neither: from the incident's risk level through the node's
   ``workflow.first_report_hours`` table (default Ⅰ 1 h, Ⅱ 1 h, Ⅲ 2 h,
   Ⅳ 3 h, the Huai'an rule of the pilot report).

Every node runs one checker, a named thread (``deadlines-CN-HB``) that calls
:meth:`DeadlineChecker.step` every ``workflow.checker_interval_ms``. A step

1. flags each request past its deadline whose first report is still owed.
   The flag is set with a compare-and-set on its column, so ``request.overdue``
   is logged once per request and node, whatever the number of steps or
   replicas. Both parties flag: each sees the request overdue. A request
   whose incident is retracted here is withdrawn with it, no longer open
   work: it is neither flagged nor escalated, nor its escalation record sent.
2. on the requester's node only, escalates (提级) each flagged request whose
   agreement names a node in ``escalate_overdue_to``: the requester's escalate
   move goes to the handler, and an escalation record with the incident goes
   to that node. Only the requester escalates, so the national node hears of
   an overdue request once.
3. sends the escalation record of any escalated request that has none yet:
   the move and the record are two publishes, and a node that stopped between
   them sends the record on its next step.

Gap (issue 3): one deadline, one escalation. There is no reminder before
the deadline, no second deadline for the result once the first report is
in, and nothing further if the national node does not act on an
escalation; staff see the overdue flag in ``guantong requests list``.

Time is the injected clock's: tests move a FakeClock past a deadline and call
``step()``, or let the thread find it, without waiting for real time to pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from guantong.v1 import records_pb2 as pb

from node.clock import Clock
from node.errors import GuantongError, InvalidRecord
from node.records import timestamp
from node.workflow.wire import time_of

if TYPE_CHECKING:
    from node.workflow.service import Workflows

log = structlog.get_logger(__name__)


def with_deadline(
    record: pb.Record,
    incident: pb.IncidentReport | None,
    now: datetime,
    first_report_hours: dict[int, float],
) -> pb.Record:
    """``record`` with its deadline set, if it is a request; else ``record``."""
    if record.WhichOneof("body") != "joint_request":
        return record
    request = record.joint_request
    if request.HasField("due_at"):
        if time_of(request.due_at) <= now:
            raise InvalidRecord("joint_request.due_at", "is not in the future")
        return record

    if request.due_within_hours > 0:
        hours = request.due_within_hours
    elif incident is not None and incident.level in first_report_hours:
        hours = first_report_hours[incident.level]
    else:
        raise InvalidRecord(
            "joint_request.due_at",
            "no deadline given and the incident's level is unknown to set one from",
        )
    prepared = pb.Record()
    prepared.CopyFrom(record)
    prepared.joint_request.due_at.CopyFrom(timestamp(now + timedelta(hours=hours)))
    return prepared


@dataclass
class CheckReport:
    """What one step did, by request subject."""

    flagged: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    escalations_sent: list[str] = field(default_factory=list)


class DeadlineChecker:
    """One node's deadline checker: a step function and the thread that runs it."""

    def __init__(
        self, node_id: str, workflows: Workflows, clock: Clock, interval_ms: int
    ):
        self.node_id = node_id
        self.workflows = workflows
        self.clock = clock
        self.interval_s = interval_ms / 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> CheckReport:
        report = CheckReport()
        now = self.clock.now()
        data = self.workflows.data

        for row in data.due_unflagged(now):
            if not data.flag_overdue(row.subject_id, now):
                continue  # another step got there first
            report.flagged.append(row.subject_id)
            log.warning(
                "request.overdue",
                request=row.subject_id,
                role="requester" if row.requester == self.node_id else "handler",
                handler=row.handler,
                state=row.state.status.value,
                due_at=row.due_at.isoformat(),
                overdue_by_s=int((now - row.due_at).total_seconds()),
            )

        for row in data.overdue_to_escalate(self.node_id):
            try:
                moved = self.workflows.escalate_overdue(row)
            except GuantongError as exc:
                # The request moved under us (a late report, a close): the
                # next step sees the new state.
                log.info(
                    "request.overdue_escalation_skipped",
                    request=row.subject_id,
                    reason=str(exc),
                )
                continue
            if moved is not None:
                report.escalated.append(row.subject_id)

        report.escalations_sent.extend(self.workflows.send_unsent_escalations())
        return report

    # --- the thread ------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"deadlines-{self.node_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("deadlines.checker_did_not_stop", thread=self._thread.name)
            self._thread = None

    def _run(self) -> None:
        log.info(
            "deadlines.checker_started", node=self.node_id, interval_s=self.interval_s
        )
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("deadlines.step_failed", node=self.node_id)
            self._stop.wait(self.interval_s)
