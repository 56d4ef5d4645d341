"""decision facts: what the team learns from each draft and its decision (issue 21, point 1)

Revision ID: 0009
Revises: 0008

Drafts gain the policy version they were written under, their category (the eval's words, from
their tools and outcome), the time their card was first shown ready for review, and, at the
decision, the edit distance between draft and sent reply and the conversation's tokens and cost
so far; customers' feedback (a reply's 👍 / 👎, the CSAT answer) gets a table of its own, kept
with the draft it is about. Columns (nullable, or with a server default) and a table only added,
so an older instance still running on the same PostgreSQL keeps inserting and deciding drafts;
its rows simply lack the facts.

Backfilled where the stored rows say it: the category (from the draft's tool calls, escalation,
refused refunds and no-reply notice), the edit distance of approved and edited drafts, and the
conversation's tokens and cost up to the decision (from the usage ledger). Not derivable, left
empty: the policy version and the time a card was shown.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from bot.domain.category import DraftSignals, category_of
from bot.domain.measures import edit_distance

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BATCH = 500
_COLUMNS = (
    "conversation_cost_microusd",
    "conversation_tokens",
    "edit_distance",
    "shown_at",
    "category",
    "policy_version",
)
# The values as of this revision.
_DECIDED_TO_SEND = ("approved", "edited", "sent", "send_failed")
_NO_REPLY_NOTICE = "No reply needed"

drafts = sa.table(
    "drafts",
    sa.column("id", sa.String()),
    sa.column("conversation_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("text", sa.Text()),
    sa.column("edited_text", sa.Text()),
    sa.column("notice", sa.Text()),
    sa.column("escalation", sa.Text()),
    sa.column("decided_at", sa.DateTime(timezone=True)),
    sa.column("category", sa.String()),
    sa.column("edit_distance", sa.Float()),
    sa.column("conversation_tokens", sa.BigInteger()),
    sa.column("conversation_cost_microusd", sa.BigInteger()),
)
tool_calls = sa.table("tool_calls", sa.column("draft_id", sa.String()), sa.column("name", sa.String()))
actions = sa.table("proposed_actions", sa.column("draft_id", sa.String()), sa.column("status", sa.String()))
usage = sa.table(
    "usage",
    sa.column("conversation_id", sa.String()),
    sa.column("prompt_tokens", sa.Integer()),
    sa.column("completion_tokens", sa.Integer()),
    sa.column("cost_microusd", sa.BigInteger()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Adding columns takes a brief exclusive lock: rather fail (and be retried) than queue a
        # running instance's statements behind a long transaction.
        op.execute("SET LOCAL lock_timeout = '10s'")
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy_version", sa.String(16), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("category", sa.String(24), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("shown_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("edit_distance", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("conversation_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("conversation_cost_microusd", sa.BigInteger(), nullable=True))
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("draft_id", sa.String(32), sa.ForeignKey("drafts.id"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("draft_id", "kind", "author_id", name="uq_feedback_answer"),
        sa.CheckConstraint("kind IN ('reply', 'csat')", name="ck_feedback_kind"),
        sa.CheckConstraint(
            "(kind = 'reply' AND abs(score) = 1) OR (kind = 'csat' AND score BETWEEN 1 AND 5)",
            name="ck_feedback_score",
        ),
    )
    op.create_index("ix_feedback_conversation_id", "feedback", ["conversation_id"])
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    _backfill_categories()
    _backfill_edit_distances()
    _backfill_conversation_spend()


def _backfill_categories() -> None:
    bind = op.get_bind()
    after = ""
    while True:
        rows = bind.execute(
            sa.select(drafts.c.id, drafts.c.status, drafts.c.notice, drafts.c.escalation)
            .where(drafts.c.status != "drafting", drafts.c.id > after)
            .order_by(drafts.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        ids = [r.id for r in rows]
        tools: dict[str, set[str]] = defaultdict(set)
        for draft_id, name in bind.execute(
            sa.select(tool_calls.c.draft_id, tool_calls.c.name).where(tool_calls.c.draft_id.in_(ids))
        ):
            tools[draft_id].add(name)
        refused = set(
            bind.execute(
                sa.select(actions.c.draft_id).where(actions.c.draft_id.in_(ids), actions.c.status == "refused")
            ).scalars()
        )
        by_category: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            signals = DraftSignals.of(
                tools[r.id],
                no_reply=r.status == "superseded" and (r.notice or "").startswith(_NO_REPLY_NOTICE),
                escalated=bool(r.escalation),
                refund_refused=r.id in refused,
            )
            by_category[category_of(signals).value].append(r.id)
        for category, members in by_category.items():
            bind.execute(drafts.update().where(drafts.c.id.in_(members)).values(category=category))
        after = ids[-1]


def _backfill_edit_distances() -> None:
    bind = op.get_bind()
    sent = sa.and_(drafts.c.status.in_(_DECIDED_TO_SEND), drafts.c.decided_at.is_not(None))
    bind.execute(drafts.update().where(sent, drafts.c.edited_text.is_(None)).values(edit_distance=0.0))
    after = ""
    while True:
        rows = bind.execute(
            sa.select(drafts.c.id, drafts.c.text, drafts.c.edited_text)
            .where(sent, drafts.c.edited_text.is_not(None), drafts.c.id > after)
            .order_by(drafts.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        for r in rows:
            distance = edit_distance(r.text or "", r.edited_text or "")
            bind.execute(drafts.update().where(drafts.c.id == r.id).values(edit_distance=distance))
        after = rows[-1].id


def _backfill_conversation_spend() -> None:
    spent_before = sa.and_(
        usage.c.conversation_id == drafts.c.conversation_id, usage.c.created_at <= drafts.c.decided_at
    )
    tokens = sa.select(sa.func.coalesce(sa.func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0)).where(
        spent_before
    )
    cost = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_microusd), 0)).where(spent_before)
    op.get_bind().execute(
        drafts.update()
        .where(drafts.c.decided_at.is_not(None))
        .values(conversation_tokens=tokens.scalar_subquery(), conversation_cost_microusd=cost.scalar_subquery())
    )


def downgrade() -> None:
    op.drop_table("feedback")
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        for column in _COLUMNS:
            batch_op.drop_column(column)
