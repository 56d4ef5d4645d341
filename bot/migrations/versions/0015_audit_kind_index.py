"""audit_events: an index on (kind, created_at)

Revision ID: 0015
Revises: 0014

The identity checks count the failed attempts of the last hours (``verify_failed`` lines) on
every verification, and the reports read decisions by kind and time: without this index each of
those read the whole audit trail, the largest table. An index only: an older instance still
running reads and writes as before (its inserts wait while the index is built, on PostgreSQL at
most ``lock_timeout`` to start).
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Building takes a lock that holds writers back: rather fail (and be retried) than queue a
        # running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")
    op.create_index("ix_audit_events_kind_created_at", "audit_events", ["kind", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_events_kind_created_at", table_name="audit_events")
