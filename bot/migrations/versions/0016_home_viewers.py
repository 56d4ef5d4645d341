"""home_viewers: who opened their home on a desk, shared by every instance

Revision ID: 0016
Revises: 0015

A new table only, with nothing to backfill (the viewers were kept in each instance's memory): an
older instance still running never reads or writes it and keeps refreshing the homes opened on
it, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "home_viewers",
        sa.Column("desk", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("home_viewers")
