"""direct replies: an approved reply sent by direct message, and the thread's line about it

Revision ID: 0012
Revises: 0011

No new column: two new values of ``outbox.kind`` (``direct_reply``, ``dm_notice``), so the CHECK
of 0011 is widened. ``[identity] public_places = "dm"`` queues a reply in a public place under
its own kind, so an older instance still running on the same PostgreSQL never posts it in the
public thread: it does not know the kind, its claim of that row fails and is rolled back, and
this version delivers it. The older instance's own rows keep their kinds, all still allowed.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OLD_CHECK = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff', 'csat')"
NEW_CHECK = "kind IN ('reply', 'acknowledgement', 'out_of_hours', 'handoff', 'csat', 'direct_reply', 'dm_notice')"


def _check(expression: str) -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint("ck_outbox_kind", type_="check")
        batch_op.create_check_constraint("ck_outbox_kind", expression)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # As in 0007: rather fail (and be retried) than queue a running instance behind the lock.
        op.execute("SET LOCAL lock_timeout = '10s'")
    _check(NEW_CHECK)


def downgrade() -> None:
    # Rows of the new kinds would break the old CHECK: a direct reply not yet sent goes back to
    # waiting as nothing (failed), never as a public reply.
    op.execute(
        "UPDATE outbox SET status = 'failed', kind = 'reply', last_error = 'downgraded: direct messages "
        "are not supported' WHERE kind = 'direct_reply' AND status <> 'sent'"
    )
    op.execute("UPDATE outbox SET kind = 'reply' WHERE kind = 'direct_reply'")
    op.execute("UPDATE outbox SET kind = 'handoff' WHERE kind = 'dm_notice'")
    _check(OLD_CHECK)
