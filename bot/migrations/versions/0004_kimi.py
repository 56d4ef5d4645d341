"""knowledge files uploaded through Kimi's files API

Revision ID: 0004_kimi
Revises: 0003_guards
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_kimi"
down_revision = "0003_guards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_files",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("content_hash"),
    )


def downgrade() -> None:
    op.drop_table("knowledge_files")
