"""conversation life: a status, an owner (bot or human) and an assignee per conversation

Revision ID: 0007
Revises: 0006

Columns only added, each with a server default, so an older instance still running on the same
PostgreSQL keeps inserting conversations (they start open and bot-owned, as before). The status
and owner are VARCHAR kept to their values by CHECK constraints, like the drafts' status (0006).
Existing conversations are open and bot-owned; ``status_at`` starts at their last update.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The values as of this revision (bot/domain/states.py may grow later).
CHECKS = {
    "ck_conversations_status": "status IN ('open', 'waiting_on_customer', 'resolved')",
    "ck_conversations_owner": "owner IN ('bot', 'human')",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Adding columns and constraints takes a brief exclusive lock: rather fail (and be retried)
        # than queue a running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(24), nullable=False, server_default="open"))
        batch_op.add_column(sa.Column("owner", sa.String(8), nullable=False, server_default="bot"))
        batch_op.add_column(sa.Column("owner_reason", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("assignee_id", sa.String(128), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("assignee", sa.String(255), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))
        for name, condition in CHECKS.items():
            batch_op.create_check_constraint(name, condition)
    conversations = sa.table("conversations", sa.column("status_at"), sa.column("updated_at"))
    op.get_bind().execute(conversations.update().values(status_at=conversations.c.updated_at))


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        for name in CHECKS:
            batch_op.drop_constraint(name, type_="check")
        for column in ("status_at", "assignee", "assignee_id", "owner_reason", "owner", "status"):
            batch_op.drop_column(column)
