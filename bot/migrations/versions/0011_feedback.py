"""customer feedback: the customers' 👍 / 👎 on delivered replies, and the CSAT question as an
outbox fixed text

Revision ID: 0011
Revises: 0008 (written beside other helpers' 0009 and 0010; the lead rechains it at merge)

Safe while an older instance still runs on the same PostgreSQL: ``feedback`` is a new table it
never reads, and the outbox's kind check only grows (``csat``), so every row the older instance
writes still passes. An older dispatcher that meets a due CSAT row cannot read its kind: its
claim fails and is rolled back (the row stays due), and this version posts the text, once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None

# The values as of this revision (bot/domain/states.py may grow later).
VOTE_CHECK = "vote IN ('up', 'down')"
KIND_BEFORE = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff')"
KIND_CHECK = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff', 'csat')"


def _lock_briefly() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Altering the outbox takes a brief exclusive lock: rather fail (and be retried) than queue
        # a running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("draft_id", sa.String(32), sa.ForeignKey("drafts.id"), nullable=False),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("vote", sa.String(8), sa.CheckConstraint(VOTE_CHECK, name="ck_feedback_vote"), nullable=False),
        sa.Column("votes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_conversation_id", "feedback", ["conversation_id"])
    op.create_index("ix_feedback_updated_at", "feedback", ["updated_at"])
    op.create_index("ux_feedback_draft_customer", "feedback", ["draft_id", "customer_id"], unique=True)
    _lock_briefly()
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint("ck_outbox_kind", type_="check")
        batch_op.create_check_constraint("ck_outbox_kind", KIND_CHECK)


def downgrade() -> None:
    outbox = sa.table("outbox", sa.column("kind"))
    op.get_bind().execute(outbox.delete().where(outbox.c.kind == "csat"))  # no place for it before
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint("ck_outbox_kind", type_="check")
        batch_op.create_check_constraint("ck_outbox_kind", KIND_BEFORE)
    op.drop_table("feedback")
