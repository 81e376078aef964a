"""Deadlines: how a request's deadline is set, and one step of the checker
run by hand with a fake clock (no thread, no waiting)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from guantong.v1 import records_pb2 as pb

from gateway.policy import PolicyHolder
from node.appliers import Appliers
from node.clock import FakeClock
from node.config import WorkflowConfig, load_config
from node.errors import ConfigError, InvalidRecord
from node.publishing import Publisher
from node.record_json import record_from_json
from node.storage import Store
from node.storage import workflows as data
from node.storage.workflows import Move
from node.workflow import appliers as workflow_appliers
from node.workflow.deadlines import DeadlineChecker, with_deadline
from node.workflow.requests import Disposition, Handling, RequestState
from node.workflow.service import Workflows
from tests.conftest import POLICIES
from tests.helpers import incident

NOW = datetime(2025, 7, 1, 8, tzinfo=UTC)
HOURS = {1: 1.0, 2: 1.0, 3: 2.0, 4: 3.0}
REQUEST = "CN-HB/HB-1-R1"


def request(**deadline: object) -> pb.Record:
    data = {
        "ref": "R1",
        "kind": "joint_request",
        "incident_ref": "HB-1",
        "to": "CN-HN",
        "ask": "请协助核查",
        **deadline,
    }
    return record_from_json(data, "CN-HB")[1]


def level(number: int) -> pb.IncidentReport:
    return pb.IncidentReport(title="事件", level=number)


def due(record: pb.Record) -> datetime:
    return record.joint_request.due_at.ToDatetime(tzinfo=UTC)


# --- the deadline of a request -----------------------------------------------------


@pytest.mark.parametrize(("number", "hours"), sorted(HOURS.items()))
def test_without_a_deadline_the_incidents_level_sets_it(number, hours):
    prepared = with_deadline(request(), level(number), NOW, HOURS)
    assert due(prepared) == NOW + timedelta(hours=hours)


def test_the_level_table_is_the_nodes_own():
    prepared = with_deadline(request(), level(3), NOW, {**HOURS, 3: 0.25})
    assert due(prepared) == NOW + timedelta(minutes=15)


def test_due_within_hours_counts_on_the_nodes_clock():
    prepared = with_deadline(request(due_within_hours=5), level(1), NOW, HOURS)
    assert due(prepared) == NOW + timedelta(hours=5)


def test_an_explicit_deadline_is_kept():
    record = request(due_at="2025-07-01T20:00:00+08:00")
    assert due(with_deadline(record, level(1), NOW, HOURS)) == NOW + timedelta(hours=4)


def test_a_deadline_in_the_past_is_refused():
    record = request(due_at="2025-07-01T15:00:00+08:00")
    with pytest.raises(InvalidRecord) as refused:
        with_deadline(record, level(1), NOW, HOURS)
    assert refused.value.field == "joint_request.due_at"


def test_other_records_pass_unchanged():
    record = pb.Record(notice=pb.Notice(title="通报"))
    assert with_deadline(record, None, NOW, HOURS) is record


def test_a_request_with_neither_deadline_nor_a_known_level_is_refused():
    with pytest.raises(InvalidRecord):
        with_deadline(request(), None, NOW, HOURS)


def test_the_config_needs_hours_for_every_level():
    with pytest.raises(ValueError, match="each level 1 to 4"):
        WorkflowConfig(first_report_hours={1: 1, 2: 1, 3: 2})
    with pytest.raises(ValueError, match="hours must be > 0"):
        WorkflowConfig(first_report_hours={**HOURS, 4: 0})


# --- one step of the checker --------------------------------------------------------


class Requester:
    """CN-HB's node without servers or threads: store, publisher, workflows."""

    def __init__(self, url: str, clock: FakeClock, policies: Path = POLICIES):
        self.store = Store(url)
        self.store.migrate()
        holder = PolicyHolder(policies)
        appliers = Appliers()
        workflow_appliers.register(
            appliers, "CN-HB", workflow_appliers.audience_of(holder, "CN-HB", clock)
        )
        self.publisher = Publisher(
            "CN-HB",
            self.store,
            holder,
            lambda: {"CN-HN", "CN", "CN-JX"},
            clock,
            appliers=appliers,
            prepare=lambda record, incident, now: with_deadline(
                record, incident, now, HOURS
            ),
        )
        self.workflows = Workflows(
            "CN-HB", self.store, self.publisher, holder, clock, WorkflowConfig()
        )
        self.checker = DeadlineChecker("CN-HB", self.workflows, clock, 1000)

    def publish(self, data: dict) -> None:
        ref, record = record_from_json(data, "CN-HB")
        self.publisher.publish(ref, record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def hb(tmp_path: Path, clock: FakeClock) -> Iterator[Requester]:
    requester = Requester(f"sqlite:///{tmp_path / 'hb.db'}", clock)
    requester.publish(incident("HB-1", level=2))
    requester.publish(
        {
            "ref": "HB-1-R1",
            "kind": "joint_request",
            "incident_ref": "HB-1",
            "to": "CN-HN",
            "ask": "请协助核查",
        }
    )
    yield requester
    requester.store.close()


def test_nothing_happens_before_the_deadline(hb, clock):
    clock.advance(timedelta(minutes=59))
    report = hb.checker.step()
    assert report.flagged == report.escalated == report.escalations_sent == []


def test_an_overdue_request_is_flagged_once_and_escalated_once(hb, clock):
    clock.advance(timedelta(hours=1, seconds=1))

    first = hb.checker.step()
    again = hb.checker.step()

    assert first.flagged == [REQUEST] and first.escalated == [REQUEST]
    assert again.flagged == again.escalated == again.escalations_sent == []
    row = hb.workflows.data.request(REQUEST)
    assert row.overdue_flagged_at == NOW + timedelta(hours=1, seconds=1)
    assert row.state.disposition is Disposition.ESCALATED
    assert row.escalated_to == "CN" and row.escalation_subject
    assert row.escalation_reason.startswith(
        "逾期未报 overdue: no first report from CN-HN"
    )
    [escalation] = hb.workflows.escalations()
    assert escalation.request_subject == REQUEST and escalation.to_node == "CN"


def test_an_escalation_record_lost_between_the_two_publishes_is_sent_next_step(
    hb, clock
):
    publish = hb.publisher.publish
    stopped = [True]

    def escalation_fails(ref, record, author_unit=""):  # type: ignore[no-untyped-def]
        if record.HasField("escalation") and stopped:
            raise RuntimeError("the node stopped here")
        return publish(ref, record, author_unit)

    hb.publisher.publish = escalation_fails  # type: ignore[method-assign]
    clock.advance(timedelta(hours=2))

    first = hb.checker.step()
    assert first.escalated == [REQUEST] and first.escalations_sent == []
    assert hb.workflows.data.request(REQUEST).escalation_subject is None
    assert hb.workflows.escalations() == []

    stopped.clear()
    second = hb.checker.step()
    assert second.escalations_sent == [REQUEST]
    assert hb.workflows.data.request(REQUEST).escalation_subject
    assert len(hb.workflows.escalations()) == 1


def test_without_escalate_overdue_to_an_overdue_request_is_only_flagged(
    tmp_path, clock, policies_copy
):
    text = (policies_copy / "central-china.yaml").read_text("utf-8")
    (policies_copy / "central-china.yaml").write_text(
        text.replace("escalate_overdue_to: CN\n", ""), "utf-8"
    )
    requester = Requester(f"sqlite:///{tmp_path / 'hb.db'}", clock, policies_copy)
    try:
        requester.publish(incident("HB-1", level=3))
        requester.publish(
            {
                "ref": "HB-1-R1",
                "kind": "joint_request",
                "incident_ref": "HB-1",
                "to": "CN-HN",
                "ask": "请协助核查",
            }
        )
        clock.advance(timedelta(hours=2, seconds=1))
        report = requester.checker.step()
        assert report.flagged == [REQUEST] and report.escalated == []
        row = requester.workflows.data.request(REQUEST)
        assert row.state.disposition is Disposition.ACTIVE
        assert requester.workflows.escalations() == []
    finally:
        requester.store.close()


def test_a_first_report_before_the_deadline_means_nothing_is_overdue(hb, clock):
    # The handler's report, as CN-HB would apply it on receipt.
    with hb.store.write() as connection:
        data.move_request_txn(
            connection,
            REQUEST,
            RequestState(),
            RequestState(Handling.ACCEPTED),
            Move("report_progress", "CN-HN", "已到场", NOW, first_report=True),
        )
    clock.advance(timedelta(hours=5))
    assert hb.checker.step().flagged == []


def test_the_checker_thread_is_named_and_stops(hb):
    hb.checker.interval_s = 0.01
    hb.checker.start()
    assert hb.checker._thread.name == "deadlines-CN-HB"
    hb.checker.stop()
    assert hb.checker._thread is None


def test_a_new_version_with_a_later_deadline_is_watched_afresh(hb, clock):
    clock.advance(timedelta(hours=1, seconds=1))
    hb.checker.step()
    assert hb.workflows.data.request(REQUEST).overdue_flagged_at is not None

    hb.publish(
        {
            "ref": "HB-1-R1",
            "kind": "joint_request",
            "incident_ref": "HB-1",
            "to": "CN-HN",
            "ask": "请协助核查（延期）",
            "due_within_hours": 4,
        }
    )
    row = hb.workflows.data.request(REQUEST)
    assert row.overdue_flagged_at is None and row.ask == "请协助核查（延期）"
    assert row.state.disposition is Disposition.ESCALATED  # the state stays
    assert hb.checker.step().flagged == []


def test_a_bad_deadline_table_is_named_with_its_file_line_and_key(tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text(
        "node_id: CN-HB\ndata_dir: data\npolicies: policies\n"
        "tls: {ca: ca.pem, cert: node.pem, key: node.key}\n"
        "workflow:\n  first_report_hours: {1: 1, 2: 1, 3: 2}\n",
        "utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert f"{config}:6: workflow.first_report_hours: give hours for each level" in str(
        refused.value
    )
