"""fixed texts in the outbox: the policy's acknowledgement, out-of-hours and hand-off texts are
outbox rows, delivered exactly once by the dispatcher like an approved reply

Revision ID: 0008
Revises: 0007 (written beside another helper's 0008; rechained onto it at merge)

Safe while an older instance still runs on the same PostgreSQL: the columns are added nullable
or with a server default, so its inserts of replies keep working (``kind`` = 'reply'; the
conversation and key stay empty, which this version reads as "the draft's"). ``draft_id`` may
now be empty: a fixed text has no draft. An older dispatcher that claims a fixed text finds no
draft for it and gives up on that attempt; the row's lease expires and this version delivers it,
first asking the platform whether the text is already there (late by one lease, never lost nor
posted twice). Existing rows are replies: their conversation is filled in from their draft.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The values as of this revision (bot/domain/states.py may grow later).
KIND_CHECK = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Altering the table takes a brief exclusive lock: rather fail (and be retried) than queue
        # a running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("draft_id", existing_type=sa.String(32), nullable=True)
        batch_op.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="reply"))
        batch_op.add_column(sa.Column("conversation_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(160), nullable=True))
        batch_op.create_check_constraint("ck_outbox_kind", KIND_CHECK)
        batch_op.create_index("ix_outbox_idempotency_key", ["idempotency_key"], unique=True)
    outbox = sa.table("outbox", sa.column("draft_id"), sa.column("conversation_id"))
    drafts = sa.table("drafts", sa.column("id"), sa.column("conversation_id"))
    of_draft = sa.select(drafts.c.conversation_id).where(drafts.c.id == outbox.c.draft_id).scalar_subquery()
    op.get_bind().execute(outbox.update().where(outbox.c.conversation_id.is_(None)).values(conversation_id=of_draft))


def downgrade() -> None:
    outbox = sa.table("outbox", sa.column("draft_id"))
    op.get_bind().execute(outbox.delete().where(outbox.c.draft_id.is_(None)))  # fixed texts have no place before
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_idempotency_key")
        batch_op.drop_constraint("ck_outbox_kind", type_="check")
        for column in ("idempotency_key", "conversation_id", "kind"):
            batch_op.drop_column(column)
        batch_op.alter_column("draft_id", existing_type=sa.String(32), nullable=False)
