"""conversation place: who can read a conversation's thread (public or private)

Revision ID: 0010
Revises: 0009

One nullable column with a server default and a CHECK on its two values, so an older instance
still running on the same PostgreSQL keeps inserting conversations (they read as public, the
safe side, until this version sees their next message). Existing conversations are backfilled
from what their thread key already says: a Slack direct message (channel ``D…``) and a Discord DM
(workspace ``@me``) are private; everything else stays public.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CHECK = ("ck_conversations_place", "place IN ('public', 'private')")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # As in 0007: rather fail (and be retried) than queue a running instance behind the lock.
        op.execute("SET LOCAL lock_timeout = '10s'")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("place", sa.String(8), nullable=True, server_default="public"))
        batch_op.create_check_constraint(*CHECK)
    conversations = sa.table(
        "conversations", sa.column("place"), sa.column("platform"), sa.column("workspace"), sa.column("channel")
    )
    c = conversations.c
    direct = sa.or_(
        sa.and_(c.platform == "slack", c.channel.like("D%")),
        sa.and_(c.platform == "discord", c.workspace == "@me"),
    )
    op.get_bind().execute(conversations.update().where(direct).values(place="private"))


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_constraint(CHECK[0], type_="check")
        batch_op.drop_column("place")
