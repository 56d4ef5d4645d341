"""fact notes: where in the thread each change of a conversation's facts was established

Revision ID: 0005_fact_notes
Revises: 0004_kimi
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_fact_notes"
down_revision = "0004_kimi"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fact_notes", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("fact_notes")
