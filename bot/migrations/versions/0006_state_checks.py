"""state checks: drafts, proposed actions and the outbox hold only their states' values

Revision ID: 0006
Revises: 0005_fact_notes

A CHECK constraint per status column (the columns stay VARCHAR: a new state later is one more
migration like this one, on SQLite and PostgreSQL alike). Safe while an older instance still
runs on the same PostgreSQL: it writes only these values. Existing rows are checked first: a
value that differs only in case or surrounding spaces is rewritten to its state; any other
unknown value stops the upgrade with a message naming it (nothing is guessed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.errors import SupportbotError

revision = "0006"
down_revision = "0005_fact_notes"
branch_labels = None
depends_on = None

# The values as of this revision (the enums in bot/domain/states.py may grow later).
STATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "drafts": (
        "ck_drafts_status",
        (
            "drafting",
            "awaiting_review",
            "approved",
            "edited",
            "rejected",
            "superseded",
            "failed",
            "sent",
            "send_failed",
        ),
    ),
    "proposed_actions": (
        "ck_proposed_actions_status",
        ("proposed", "refused", "approved", "executed", "failed", "rejected", "superseded"),
    ),
    "outbox": ("ck_outbox_status", ("pending", "sending", "sent", "failed")),
}


def _condition(values: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _normalise(table: str, values: tuple[str, ...]) -> None:
    """Rewrite near-misses to their state; fail, naming them, on values nobody can map."""
    bind = op.get_bind()
    rows = sa.table(table, sa.column("status", sa.String()))
    canonical = sa.func.lower(sa.func.trim(rows.c.status))
    for value in values:
        bind.execute(rows.update().where(canonical == value, rows.c.status != value).values(status=value))
    unknown = bind.execute(
        sa.select(rows.c.status, sa.func.count())
        .where(sa.or_(rows.c.status.is_(None), rows.c.status.not_in(values)))
        .group_by(rows.c.status)
        .order_by(rows.c.status)
    ).all()
    if unknown:
        found = ", ".join(f"{status!r} ({count} rows)" for status, count in unknown)
        raise SupportbotError(
            f"cannot upgrade the database: {table}.status holds values that are not states: {found}; "
            f"set them to one of {', '.join(values)} and start again"
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # ADD CONSTRAINT takes a brief exclusive lock: rather fail (and be retried) than queue a
        # running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")
    for table, (name, values) in STATES.items():
        _normalise(table, values)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_check_constraint(name, _condition(values))


def downgrade() -> None:
    for table, (name, _values) in STATES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(name, type_="check")
