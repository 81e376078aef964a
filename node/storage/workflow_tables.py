"""The workflow tables (migration 0003), views of the log kept by appliers.

Each row is written in the transaction of the log row it derives from
(``node.workflow.appliers``), on the node that published the record and on
the nodes that received it alike.

- ``requests``: one row per joint-handling request this node sent or
  received, with its state in two parts (``handling``, the handler's;
  ``disposition``, the requester's; see ``node.workflow.requests``) and the
  shown ``state`` beside them for listing. A local move changes it with a
  compare-and-set on both parts.
- ``notices``: notices this node sent or received; on a receiver, its own
  acknowledgement. ``notice_targets``: on the sender, every node a notice is
  for, and whether and when it acknowledged.
- ``escalations``: escalations (提级) this node sent or received, with a
  summary of the incident they carry; the whole snapshot is in the log row.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from node.storage.schema import Id, NodeId, Stamp, metadata

SubjectId = String(96)

requests = Table(
    "requests",
    metadata,
    Column("subject_id", SubjectId, primary_key=True),
    Column("ref", String(64), nullable=False),
    Column("requester", NodeId, nullable=False),
    Column("handler", NodeId, nullable=False),
    Column("incident_subject", SubjectId, nullable=False),
    # The incident as held here when the request was made; NULL if not held.
    Column("incident_title", Text, nullable=True),
    Column("level", Integer, nullable=True),
    Column("exercise", Boolean, nullable=False),
    Column("ask", Text, nullable=False),
    # The newest version of the request held here.
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    Column("created_at", Stamp, nullable=False),
    Column("due_at", Stamp, nullable=False),
    Column("handling", String(16), nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("updated_at", Stamp, nullable=False),
    Column("moves", Integer, nullable=False),
    Column("last_action", String(16), nullable=True),
    Column("last_by", NodeId, nullable=True),
    Column("last_text", Text, nullable=True),
    Column("first_report_at", Stamp, nullable=True),
    Column("result", Text, nullable=True),
    Column("decline_reason", Text, nullable=True),
    Column("escalated_at", Stamp, nullable=True),
    Column("escalation_reason", Text, nullable=True),
    Column("escalated_to", NodeId, nullable=True),
    # The escalation record sent for it, once sent (requester's node).
    Column("escalation_subject", SubjectId, nullable=True),
    # Set once, by this node's deadline checker.
    Column("overdue_flagged_at", Stamp, nullable=True),
    Index("ix_requests_state_due", "state", "due_at"),
)

notices = Table(
    "notices",
    metadata,
    Column("subject_id", SubjectId, primary_key=True),
    Column("ref", String(64), nullable=False),
    Column("origin", NodeId, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    Column("sent_at", Stamp, nullable=False),
    # NULL on the origin.
    Column("received_from", NodeId, nullable=True),
    Column("acknowledged_at", Stamp, nullable=True),
    Column("ack_text", Text, nullable=True),
)

notice_targets = Table(
    "notice_targets",
    metadata,
    Column(
        "notice_subject", SubjectId, ForeignKey("notices.subject_id"), primary_key=True
    ),
    Column("node", NodeId, primary_key=True),
    Column("acknowledged_at", Stamp, nullable=True),
    Column("ack_text", Text, nullable=True),
    Column("ack_message_id", String(64), nullable=True),
)

escalations = Table(
    "escalations",
    metadata,
    Column("subject_id", SubjectId, primary_key=True),
    Column("ref", String(64), nullable=False),
    Column("origin", NodeId, nullable=False),
    Column("to_node", NodeId, nullable=False),
    Column("incident_subject", SubjectId, nullable=False),
    Column("request_subject", SubjectId, nullable=True),
    Column("reason", Text, nullable=False),
    Column("incident_title", Text, nullable=False),
    Column("level", Integer, nullable=True),
    Column("category", String(32), nullable=True),
    Column("exercise", Boolean, nullable=False),
    Column("escalated_at", Stamp, nullable=False),
    Column("log_seq", Id, ForeignKey("log.seq"), nullable=False),
    Column("received_from", NodeId, nullable=True),
    Index("ix_escalations_at", "escalated_at"),
)
