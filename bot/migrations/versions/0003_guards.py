"""guards: conversation identity, draft flags, order postal code, linked customer accounts

Revision ID: 0003_guards
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_guards"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verified_customer_id", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("verified_via", sa.String(length=120), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("verify_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("asker_email", sa.String(length=320), nullable=False, server_default=""))
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("guard_flags", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_postal_code", sa.String(length=32), nullable=True))
    op.create_table(
        "customer_accounts",
        sa.Column("account", sa.String(length=160), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_customer_accounts")),
    )
    with op.batch_alter_table("customer_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_accounts_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("customer_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_accounts_customer_id"))
    op.drop_table("customer_accounts")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("customer_postal_code")
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.drop_column("guard_flags")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("asker_email")
        batch_op.drop_column("verify_attempts")
        batch_op.drop_column("verified_via")
        batch_op.drop_column("verified_customer_id")
