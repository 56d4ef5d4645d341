"""translations: a card's translations for the desk's language, each text translated once

Revision ID: 0013
Revises: 0012

A new table only: an older instance still running never reads or writes it. (0011 may be taken
by another change in flight; the chain is set when both are merged.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "translations",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("translations")
