"""Records lifecycle: subjects, the statement library and the case library.

Three views of the log, each kept by an applier in the transaction of the log
row it derives from: ``subjects`` (newest version, retracted or not),
``statements`` (口径库, searchable by substring) and ``cases`` (案例库, closed
incidents with their review).

It also indexes ``outbox.log_seq``: who holds a subject is read from the
outbox by log row (``node.storage.subjects``), once per update published.

Records stored before this revision are not in the views: nothing replays the
log into them here. A node that held records before upgrading shows them in
``guantong show`` (which reads the log) but not in searches, until a replay of
the log through the appliers is written (issue 3).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)
NodeId = sa.String(16)


def upgrade() -> None:
    op.create_index("ix_outbox_log_seq", "outbox", ["log_seq"])
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.String(96), primary_key=True),
        sa.Column("origin", NodeId, nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("latest_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("received_from", NodeId, nullable=True),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.Column("retracted", sa.Boolean, nullable=False),
        sa.Column("retracted_version", sa.Integer, nullable=True),
        sa.Column("retraction_reason", sa.Text, nullable=True),
    )
    op.create_table(
        "statements",
        sa.Column("subject_id", sa.String(96), primary_key=True),
        sa.Column("origin", NodeId, nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("incident_subject", sa.String(96), nullable=True),
        sa.Column("supersedes", sa.String(96), nullable=True),
        sa.Column("superseded_by", sa.String(96), nullable=True),
        sa.Column("issued_at", Stamp, nullable=False),
        sa.Column("received_from", NodeId, nullable=True),
        sa.Column("search_text", sa.Text, nullable=False),
    )
    op.create_index("ix_statements_issued", "statements", ["issued_at"])
    op.create_index("ix_statements_supersedes", "statements", ["supersedes"])
    op.create_table(
        "cases",
        sa.Column("subject_id", sa.String(96), primary_key=True),
        sa.Column("origin", NodeId, nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("closed_at", Stamp, nullable=False),
        sa.Column("received_from", NodeId, nullable=True),
        sa.Column("search_text", sa.Text, nullable=False),
    )
    op.create_index("ix_cases_closed", "cases", ["closed_at"])


def downgrade() -> None:
    for table in ("cases", "statements", "subjects"):
        op.drop_table(table)
    op.drop_index("ix_outbox_log_seq", table_name="outbox")
