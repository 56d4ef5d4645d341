"""Indexes for the reads that ran over whole tables

Revision ID: 0015
Revises: 0014

* ``audit_events (kind, created_at)``: the identity checks count the failed attempts of the last
  hours on every verification, and the reports read decisions by kind and time; both read the
  whole audit trail, the largest table.
* ``drafts (card_ref, status)`` and ``drafts (updated_at) WHERE card_version < version``: the
  sweeper looks every second for cards never posted and for cards showing an older version than
  their draft's; both scanned every draft ever written.
* ``conversations (status, status_at)``: auto-resolve's look for conversations waiting on their
  customer too long, also every sweep.

Indexes only: an older instance still running reads and writes as before (its writes wait while
an index is built; on PostgreSQL the build waits at most ``lock_timeout`` to start).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_STALE = sa.text("card_version < version")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Building takes a lock that holds writers back: rather fail (and be retried) than queue a
        # running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")
    op.create_index("ix_audit_events_kind_created_at", "audit_events", ["kind", "created_at"])
    op.create_index("ix_drafts_without_card", "drafts", ["card_ref", "status"])
    op.create_index(
        "ix_drafts_stale_cards", "drafts", ["updated_at"], sqlite_where=_STALE, postgresql_where=_STALE
    )
    op.create_index("ix_conversations_waiting", "conversations", ["status", "status_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_waiting", table_name="conversations")
    op.drop_index("ix_drafts_stale_cards", table_name="drafts")
    op.drop_index("ix_drafts_without_card", table_name="drafts")
    op.drop_index("ix_audit_events_kind_created_at", table_name="audit_events")
