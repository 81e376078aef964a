"""Agreement stamps on refusals and on the peers' answers.

``refusals`` gains the agreement id and version the refused envelope was
stamped with and the version of that agreement in force here when it was
refused; ``outbox`` gains the peer's answer to a message: its id and version
of the agreement the envelope names and the fields it withheld beyond those
sent. Together they let both admins see a peer enforcing another version
(``node.mismatches``).

Rows written before this revision have NULL in the new columns: they show no
mismatch, as before.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REFUSALS = ("agreement_id", "agreement_version", "own_agreement_version")
_OUTBOX = ("peer_agreement_id", "peer_agreement_version", "withheld_by_peer")


def upgrade() -> None:
    with op.batch_alter_table("refusals") as batch:
        batch.add_column(sa.Column("agreement_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("agreement_version", sa.Integer, nullable=True))
        batch.add_column(sa.Column("own_agreement_version", sa.Integer, nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("peer_agreement_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("peer_agreement_version", sa.Integer, nullable=True))
        batch.add_column(sa.Column("withheld_by_peer", sa.Text, nullable=True))


def downgrade() -> None:
    for table, columns in (("outbox", _OUTBOX), ("refusals", _REFUSALS)):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column)
