"""The first schema: log, decisions, outbox, peer_state, refusals.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "log",
        sa.Column("seq", Id, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(96), nullable=False),
        sa.Column("subject_version", sa.Integer, nullable=False),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("received_from", sa.String(16), nullable=True),
        sa.Column("stored_at", Stamp, nullable=False),
        sa.UniqueConstraint("origin", "message_id", name="uq_log_origin_message"),
        sa.UniqueConstraint(
            "subject_id", "subject_version", name="uq_log_subject_version"
        ),
    )
    op.create_index("ix_log_received", "log", ["received_from", "seq"])
    op.create_table(
        "decisions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("receiver", sa.String(16), nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("agreement_id", sa.String(64), nullable=True),
        sa.Column("agreement_version", sa.Integer, nullable=True),
        sa.Column("rule", sa.String(160), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("withheld_fields", sa.Text, nullable=False),
        sa.UniqueConstraint("log_seq", "receiver", name="uq_decisions_record_receiver"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("peer", sa.String(16), nullable=False),
        sa.Column("log_seq", Id, sa.ForeignKey("log.seq"), nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("settled_at", Stamp, nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
    )
    op.create_index("ix_outbox_peer_state", "outbox", ["peer", "state", "id"])
    op.create_table(
        "peer_state",
        sa.Column("peer", sa.String(16), primary_key=True),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Stamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_table(
        "refusals",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("sender", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("refusals", "peer_state", "outbox", "decisions", "log"):
        op.drop_table(table)
