"""Who receives each record of a sample file: the demo's specification.

The demo publishes every line of ``examples/incidents-2025.jsonl`` from the
node named in its ``node`` field. What each node should end up holding
follows from the agreements alone, and this module computes it the way the
sender must: decide per receiver, withhold fields, and drop a delivery that
withholding left without substance. The policy tests, ``guantong policy
explain``/``diff`` and the demo's end-to-end check all read it from here.

Statements and requests are judged by the facts of their incident
(``RecordFacts``), which is looked up among the earlier lines of the same
file by its subject id, as the publishing node would find it in its store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guantong.v1 import records_pb2

from gateway.policy.evaluate import PolicySet
from gateway.policy.fields import apply_withholding
from gateway.policy.model import Decision
from node.errors import InvalidRecord
from node.record_json import record_from_json
from node.records import RecordFacts, facts_of, incident_subject_of, subject_id


@dataclass(frozen=True)
class SampleRecord:
    """One line of a sample file, ready for a decision."""

    ref: str
    sender: str
    record: records_pb2.Record
    facts: RecordFacts
    # False for a statement or request whose incident is not in the file.
    incident_known: bool = True


def read_sample(lines: Iterable[dict[str, Any]]) -> list[SampleRecord]:
    """Records of the sample shape, each with its incident's facts."""
    incidents: dict[str, records_pb2.IncidentReport] = {}
    samples = []
    for number, data in enumerate(lines, start=1):
        sender = data.get("node")
        if not isinstance(sender, str):
            raise InvalidRecord(f"line {number}: node", "the sending node is required")
        ref, record = record_from_json(data, sender)
        if record.WhichOneof("body") == "incident":
            incidents[subject_id(sender, ref)] = record.incident

        incident_subject = incident_subject_of(record)
        incident = incidents.get(incident_subject) if incident_subject else None
        facts = facts_of(record, sender, incident)
        known = incident_subject is None or incident is not None
        samples.append(SampleRecord(ref, sender, record, facts, known))
    return samples


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, blank lines skipped."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def delivers(sample: SampleRecord, decision: Decision) -> bool:
    """Whether the decision results in a delivery: allowed and not emptied."""
    if not decision.allowed:
        return False
    return apply_withholding(sample.record, decision.withheld_fields) is not None


def receivers_of(
    sample: SampleRecord, policy_set: PolicySet, now: datetime
) -> set[str]:
    """The nodes that receive ``sample`` under ``policy_set`` at ``now``."""
    decisions = policy_set.decide_all(sample.facts, sample.sender, now)
    return {d.receiver for d in decisions if delivers(sample, d)}


def expected_receivers(
    records_jsonl_path: Path, policy_set: PolicySet, now: datetime | None = None
) -> dict[str, set[str]]:
    """For every record of the file, by its ref, the nodes that receive it."""
    now = now or datetime.now(UTC)
    samples = read_sample(read_jsonl(records_jsonl_path))
    return {sample.ref: receivers_of(sample, policy_set, now) for sample in samples}
