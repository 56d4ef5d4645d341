"""pending_edits: an agent's edit kept while it is translated into the customer's language

Revision ID: 0014
Revises: 0013

A new table only: an older instance still running never reads or writes it (it translates an
edit inside the click, as before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_edits",
        sa.Column("draft_id", sa.String(32), primary_key=True),
        sa.Column("edit", sa.Text(), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(255), nullable=False),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_edits")
