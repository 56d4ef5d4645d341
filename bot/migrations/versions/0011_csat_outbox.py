"""the CSAT question as an outbox fixed text (customers' 👍 / 👎 are kept in 0009's feedback
table, as kind 'reply')

Revision ID: 0011
Revises: 0010

Safe while an older instance still runs on the same PostgreSQL: the outbox's kind check only
grows (``csat``), so every row the older instance writes still passes. An older dispatcher that
meets a due CSAT row cannot read its kind: its claim fails and is rolled back (the row stays
due), and this version posts the text, once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The values as of this revision (bot/domain/states.py may grow later).
KIND_BEFORE = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff')"
KIND_CHECK = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff', 'csat')"


def _lock_briefly() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Altering the outbox takes a brief exclusive lock: rather fail (and be retried) than queue
        # a running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")


def upgrade() -> None:
    _lock_briefly()
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint("ck_outbox_kind", type_="check")
        batch_op.create_check_constraint("ck_outbox_kind", KIND_CHECK)


def downgrade() -> None:
    outbox = sa.table("outbox", sa.column("kind"))
    op.get_bind().execute(outbox.delete().where(outbox.c.kind == "csat"))  # no place for it before
    _lock_briefly()
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint("ck_outbox_kind", type_="check")
        batch_op.create_check_constraint("ck_outbox_kind", KIND_BEFORE)
