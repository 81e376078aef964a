"""Workflows: requests, notices and their targets, escalations.

The tables are described in ``node/storage/workflow_tables.py``.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)
NodeId = sa.String(16)
SubjectId = sa.String(96)


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("subject_id", SubjectId, primary_key=True),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("requester", NodeId, nullable=False),
        sa.Column("handler", NodeId, nullable=False),
        sa.Column("incident_subject", SubjectId, nullable=False),
        sa.Column("incident_title", sa.Text, nullable=True),
        sa.Column("level", sa.Integer, nullable=True),
        sa.Column("exercise", sa.Boolean, nullable=False),
        sa.Column("ask", sa.Text, nullable=False),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("due_at", Stamp, nullable=False),
        sa.Column("handling", sa.String(16), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.Column("moves", sa.Integer, nullable=False),
        sa.Column("last_action", sa.String(16), nullable=True),
        sa.Column("last_by", NodeId, nullable=True),
        sa.Column("last_text", sa.Text, nullable=True),
        sa.Column("first_report_at", Stamp, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("decline_reason", sa.Text, nullable=True),
        sa.Column("escalated_at", Stamp, nullable=True),
        sa.Column("escalation_reason", sa.Text, nullable=True),
        sa.Column("escalated_to", NodeId, nullable=True),
        sa.Column("escalation_subject", SubjectId, nullable=True),
        sa.Column("overdue_flagged_at", Stamp, nullable=True),
    )
    op.create_index("ix_requests_state_due", "requests", ["state", "due_at"])
    op.create_table(
        "notices",
        sa.Column("subject_id", SubjectId, primary_key=True),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("origin", NodeId, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("sent_at", Stamp, nullable=False),
        sa.Column("received_from", NodeId, nullable=True),
        sa.Column("acknowledged_at", Stamp, nullable=True),
        sa.Column("ack_text", sa.Text, nullable=True),
    )
    op.create_table(
        "notice_targets",
        sa.Column(
            "notice_subject",
            SubjectId,
            sa.ForeignKey("notices.subject_id"),
            primary_key=True,
        ),
        sa.Column("node", NodeId, primary_key=True),
        sa.Column("acknowledged_at", Stamp, nullable=True),
        sa.Column("ack_text", sa.Text, nullable=True),
        sa.Column("ack_message_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "escalations",
        sa.Column("subject_id", SubjectId, primary_key=True),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("origin", NodeId, nullable=False),
        sa.Column("to_node", NodeId, nullable=False),
        sa.Column("incident_subject", SubjectId, nullable=False),
        sa.Column("request_subject", SubjectId, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("incident_title", sa.Text, nullable=False),
        sa.Column("level", sa.Integer, nullable=True),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("exercise", sa.Boolean, nullable=False),
        sa.Column("escalated_at", Stamp, nullable=False),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("received_from", NodeId, nullable=True),
    )
    op.create_index("ix_escalations_at", "escalations", ["escalated_at"])


def downgrade() -> None:
    for table in ("escalations", "notice_targets", "notices", "requests"):
        op.drop_table(table)
