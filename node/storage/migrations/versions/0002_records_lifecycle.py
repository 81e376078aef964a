"""Placeholder kept so the revision chain is fixed: records lifecycle.

Revision ID: 0002
"""

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
