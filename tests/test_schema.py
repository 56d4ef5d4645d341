"""The migrations are the schema: a fresh database upgraded with Alembic matches the models,
an older database upgraded keeps its rows, and settings come from the places an operator puts them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.feedback import Feedback, FeedbackKind
from bot.domain.states import ActionStatus, ConversationOwner, ConversationStatus, DraftStatus, OutboxKind, OutboxStatus
from bot.errors import SupportbotError
from bot.events import Place, Vote
from bot.settings import load_settings
from bot.store import (
    ALL_METADATA,
    Conversation,
    Draft,
    Message,
    OutboxItem,
    ProposedAction,
    ToolCall,
    UsageRecord,
    create_engine,
    sessionmaker,
    upgrade_database,
)
from bot.store import feedback as feedback_rows
from bot.store import outbox as outbox_rows
from tests.harness import Harness

BEFORE_STATE_CHECKS = "0005_fact_notes"
#: An approved reply as versions before 0008 queue it (no kind, conversation or key).
OLD_OUTBOX_INSERT = (
    "INSERT INTO outbox (draft_id, thread_key, text, status, attempts, claimed_by, next_attempt_at,"
    " platform_message_id, last_error, created_at)"
    " VALUES (:draft, 'slack:T1:C1:1.0', 'Refunded.', 'pending', 0, '', :now, '', '', :now) RETURNING id"
)
_QUOTED = re.compile(r"'([^']*)'")
LITERAL = {"literal_binds": True}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database with no tables: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("database"))


@pytest.fixture
async def old_engine(empty_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_database)
    yield engine
    await engine.dispose()


def _differences(sync_conn: Any) -> list[Any]:
    """What differs between the database and the models: Alembic's comparison (tables, columns,
    types, indexes) and, which it leaves out, the CHECK constraints with the values they allow."""
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    found: list[Any] = [
        d
        for d in compare_metadata(context, list(ALL_METADATA))  # type: ignore[arg-type]
        if not (d[0] == "remove_table" and d[1].name == "alembic_version")
    ]
    reflected = inspect(sync_conn)
    for metadata in ALL_METADATA:
        for table in metadata.sorted_tables:
            modelled = {
                (str(c.name), frozenset(_QUOTED.findall(str(c.sqltext.compile(compile_kwargs=LITERAL)))))
                for c in table.constraints
                if isinstance(c, CheckConstraint)
            }
            stored = {
                (str(c["name"]), frozenset(_QUOTED.findall(c["sqltext"])))
                for c in reflected.get_check_constraints(table.name)
            }
            if modelled != stored:
                found.append(("checks", table.name, sorted(modelled - stored), sorted(stored - modelled)))
    return found


async def test_the_migrations_create_exactly_the_models_schema(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    await upgrade_database(engine)
    await upgrade_database(engine)  # idempotent

    async with engine.connect() as conn:
        differences = await conn.run_sync(_differences)
    await engine.dispose()
    assert differences == []


async def _database_at_0005_with_work_in_flight(engine: AsyncEngine) -> dict[str, Any]:
    """A database an older version left behind: a reply approved with a refund, waiting in the
    outbox; a sent one; one under review. Returns their ids."""
    await upgrade_database(engine, BEFORE_STATE_CHECKS)
    async with sessionmaker(engine).begin() as session:
        # The conversation as the older version wrote it: without the columns later revisions add.
        conversation = Conversation(id="c0005", thread_key="slack:T1:C1:1.0")
        await session.execute(
            text(
                "INSERT INTO conversations (id, thread_key, platform, workspace, channel, thread, location,"
                " customer_id, customer_name, summary, summary_through, facts, failed_drafts, created_at,"
                " updated_at, verified_customer_id, verified_via, verify_attempts, asker_email)"
                " VALUES (:id, :key, 'slack', 'T1', 'C1', '1.0', '', 'U1', '', '', 0, '{}', 0, :now, :now,"
                " '', '', 0, '')"
            ),
            {"id": conversation.id, "key": conversation.thread_key, "now": datetime.now(UTC)},
        )
        message = Message(conversation_id=conversation.id, role="customer", text="refund my order please")
        session.add(message)
        await session.flush()
        now = datetime.now(UTC)
        drafts = {
            status: f"d-{status}" for status in (DraftStatus.APPROVED, DraftStatus.SENT, DraftStatus.AWAITING_REVIEW)
        }
        for status, draft_id in drafts.items():  # as the older version wrote them
            await _insert_older_draft(session, draft_id, conversation.id, message.id, status)
        # The sent one was edited and decided after two model calls; it looked the order up.
        await session.execute(
            text(
                "UPDATE drafts SET text = 'Your order ships today.', edited_text = 'Your order ships tomorrow.',"
                " decided_at = :at WHERE id = :id"
            ),
            {"at": now, "id": drafts[DraftStatus.SENT]},
        )
        session.add_all(
            [
                ToolCall(draft_id=drafts[DraftStatus.SENT], name="get_order_status", arguments="{}"),
                *(
                    UsageRecord(
                        conversation_id=conversation.id,
                        purpose="drafting",
                        model="kimi-k2.5",
                        prompt_tokens=1000,
                        completion_tokens=100,
                        cached_tokens=0,
                        cost_microusd=700,
                        created_at=at,
                    )
                    for at in (now - timedelta(minutes=2), now - timedelta(minutes=1), now + timedelta(minutes=1))
                ),
            ]
        )
        approved = drafts[DraftStatus.APPROVED]
        action = ProposedAction(
            draft_id=approved,
            kind="refund",
            params={"order_id": "#W1", "amount_cents": 500},
            status=ActionStatus.APPROVED,
            idempotency_key="refund-1",
        )
        session.add(action)
        await session.flush()
        outbox = await session.scalar(text(OLD_OUTBOX_INSERT), {"draft": approved, "now": datetime.now(UTC)})
        return {
            "approved": approved,
            "sent": drafts[DraftStatus.SENT],
            "waiting": drafts[DraftStatus.AWAITING_REVIEW],
            "action": action.id,
            "outbox": outbox,
            "conversation": conversation.id,
        }


_OLDER_DRAFT_COLUMNS = (
    "id",
    "conversation_id",
    "message_id",
    "status",
    "revision",
    "text",
    "model",
    "failure",
    "notice",
    "escalation",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_microusd",
    "card_desk",
    "card_ref",
    "decided_by",
    "decided_by_id",
    "sent_message_id",
    "version",
    "card_version",
    "lease_owner",
    "created_at",
    "updated_at",
    "guard_flags",
)


async def _insert_older_draft(session: Any, draft_id: str, conversation_id: str, message_id: int, status: str) -> None:
    """A draft as a version before 0009 inserts it (bot/store/drafts.py then): none of the decision facts."""
    values: dict[str, Any] = dict.fromkeys(_OLDER_DRAFT_COLUMNS, "")
    values.update(
        id=draft_id,
        conversation_id=conversation_id,
        message_id=message_id,
        status=str(status),
        text=str(status),
        revision=1,
        version=1,
        card_version=0,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        cost_microusd=0,
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
        guard_flags="[]",
    )
    older = sa.table("drafts", *(sa.column(name) for name in _OLDER_DRAFT_COLUMNS))
    await session.execute(older.insert().values(values))


async def test_an_upgrade_keeps_the_work_in_flight_and_then_refuses_what_is_not_a_state(
    old_engine: AsyncEngine,
) -> None:
    engine = old_engine
    ids = await _database_at_0005_with_work_in_flight(engine)
    async with engine.begin() as conn:  # hand-edited rows: near misses the upgrade can map
        await conn.execute(text("UPDATE drafts SET status = ' Approved' WHERE id = :id"), {"id": ids["approved"]})
        await conn.execute(text("UPDATE outbox SET status = 'PENDING' WHERE id = :id"), {"id": ids["outbox"]})

    await upgrade_database(engine)

    async with sessionmaker(engine)() as session:
        drafts = {d.id: d.status for d in await session.scalars(select(Draft))}
        action = await session.scalar(select(ProposedAction))
        outbox = await session.scalar(select(OutboxItem))
    assert drafts == {
        ids["approved"]: DraftStatus.APPROVED,
        ids["sent"]: DraftStatus.SENT,
        ids["waiting"]: DraftStatus.AWAITING_REVIEW,
    }
    assert action is not None and outbox is not None
    assert (action.draft_id, action.status, action.params["amount_cents"]) == (ids["approved"], "approved", 500)
    assert (outbox.draft_id, outbox.status) == (ids["approved"], OutboxStatus.PENDING)
    assert (outbox.kind, outbox.conversation_id, outbox.idempotency_key) == (
        OutboxKind.REPLY,
        ids["conversation"],
        None,
    ), "a queued reply is a reply of its draft's conversation"
    async with sessionmaker(engine)() as session:
        conversation = await session.get(Conversation, ids["conversation"])
    assert conversation is not None, "the conversation survives the upgrade"
    assert (conversation.status, conversation.owner, conversation.assignee) == (
        ConversationStatus.OPEN,
        ConversationOwner.BOT,
        "",
    ), "an existing conversation is open and the bot's"
    assert conversation.status_at == conversation.updated_at
    async with sessionmaker(engine)() as session:
        facts = {
            d.id: (
                d.category,
                d.edit_distance,
                d.conversation_tokens,
                d.conversation_cost_microusd,
                d.policy_version,
                d.shown_at,
            )
            for d in await session.scalars(select(Draft))
        }
    assert facts[ids["sent"]] == ("status", pytest.approx(6 / 26), 2200, 1400, "", None), (
        "backfilled: the category from its tool calls, the edit's distance, the spend up to its decision"
    )
    assert facts[ids["approved"]][:3] == ("other", None, None), "decided by no one yet: no distance, no spend"
    assert facts[ids["waiting"]][0] == "other"
    async with sessionmaker(engine).begin() as session:  # an older instance still running keeps inserting drafts
        message_id = await session.scalar(select(Message.id))
        await _insert_older_draft(session, "d-older", ids["conversation"], int(message_id or 0), "drafting")
    async with sessionmaker(engine)() as session:
        older = await session.get(Draft, "d-older")
    assert older is not None and (older.category, older.policy_version, older.edit_distance) == ("", "", None)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == [], "the upgraded database is the models' schema"

    for table, row in (
        ("drafts", ids["waiting"]),
        ("proposed_actions", ids["action"]),
        ("outbox", ids["outbox"]),
        ("conversations", ids["conversation"]),
    ):
        with pytest.raises(IntegrityError, match="ck_"):
            async with engine.begin() as conn:  # around the models, as an older or buggy writer would
                await conn.execute(text(f"UPDATE {table} SET status = 'archived' WHERE id = :id"), {"id": row})
    with pytest.raises(IntegrityError, match="ck_feedback_score"):
        async with engine.begin() as conn:  # a thumbs answer is -1 or 1, whoever writes it
            await conn.execute(
                text(
                    "INSERT INTO feedback (conversation_id, draft_id, kind, score, author_id, created_at, updated_at)"
                    " VALUES (:c, :d, 'reply', 3, 'U1', :now, :now)"
                ),
                {"c": ids["conversation"], "d": ids["sent"], "now": datetime.now(UTC)},
            )
    with pytest.raises(IntegrityError, match="ck_conversations_owner"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE conversations SET owner = 'nobody'"))


async def test_after_the_fixed_texts_upgrade_an_older_instance_still_queues_replies_and_a_text_is_queued_once(
    old_engine: AsyncEngine,
) -> None:
    engine = old_engine
    ids = await _database_at_0005_with_work_in_flight(engine)
    await upgrade_database(engine)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        # An older instance still running approves a reply and queues it as it always did.
        older = await conn.scalar(text(OLD_OUTBOX_INSERT), {"draft": ids["waiting"], "now": now})
        key = f"handoff-{ids['conversation']}-1"
        queued = [
            await outbox_rows.enqueue_text(
                conn, OutboxKind.HANDOFF, ids["conversation"], "slack:T1:C1:1.0", key, t, now
            )
            for t in ("A person takes over.", "A second decision to say so.")
        ]
    assert queued == [True, False], "one text per key, whoever decides to send it"
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(OutboxItem.kind, OutboxItem.draft_id, OutboxItem.text).order_by(OutboxItem.id))
        ).all()
    assert older is not None
    assert [tuple(r) for r in rows] == [
        (OutboxKind.REPLY, ids["approved"], "Refunded."),
        (OutboxKind.REPLY, ids["waiting"], "Refunded."),
        (OutboxKind.HANDOFF, None, "A person takes over."),
    ]
    with pytest.raises(IntegrityError, match="ck_outbox_kind"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE outbox SET kind = 'memo'"))


async def test_after_the_csat_upgrade_an_older_instance_still_queues_replies_and_a_vote_is_one_row(
    old_engine: AsyncEngine,
) -> None:
    engine = old_engine
    ids = await _database_at_0005_with_work_in_flight(engine)
    await upgrade_database(engine, "0010")
    # 0011 is applied while a 0010 instance runs: its replies and fixed texts still pass the checks.
    await upgrade_database(engine)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.scalar(text(OLD_OUTBOX_INSERT), {"draft": ids["waiting"], "now": now})
        key = f"csat-{ids['conversation']}-1"
        asked = [
            await outbox_rows.enqueue_text(conn, OutboxKind.CSAT, ids["conversation"], "slack:T1:C1:1.0", key, q, now)
            for q in ("How did we do?", "How did we do, again?")
        ]
        for vote in (Vote.DOWN, Vote.UP):  # the customer changes their mind
            answer = Feedback(ids["sent"], FeedbackKind.REPLY, vote.score, "U1")
            assert await feedback_rows.record(conn, answer, now)
    assert asked == [True, False], "the CSAT question is queued once per key"
    async with engine.connect() as conn:
        kinds = (await conn.scalars(select(OutboxItem.kind).order_by(OutboxItem.id))).all()
        votes = (await conn.execute(text("SELECT draft_id, kind, author_id, score FROM feedback"))).all()
    assert kinds == [OutboxKind.REPLY, OutboxKind.REPLY, OutboxKind.CSAT]
    assert [tuple(v) for v in votes] == [(ids["sent"], "reply", "U1", 1)], "one row per customer per reply"
    with pytest.raises(IntegrityError, match="ck_feedback_score"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE feedback SET score = 2"))


async def test_an_upgrade_stops_on_a_status_it_cannot_map_and_changes_nothing(old_engine: AsyncEngine) -> None:
    engine = old_engine
    ids = await _database_at_0005_with_work_in_flight(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE drafts SET status = 'on_hold' WHERE id = :id"), {"id": ids["waiting"]})
        await conn.execute(text("UPDATE drafts SET status = ' Sent' WHERE id = :id"), {"id": ids["sent"]})

    with pytest.raises(SupportbotError) as refused:
        await upgrade_database(engine)

    assert str(refused.value).startswith(
        "cannot upgrade the database: drafts.status holds values that are not states: 'on_hold' (1 rows); "
        "set them to one of drafting, awaiting_review,"
    )
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == BEFORE_STATE_CHECKS
        stored = dict((await conn.execute(text("SELECT id, status FROM drafts"))).all())
    assert stored[ids["sent"]] == " Sent", "the upgrade rolled back whole"


OLDER_CONVERSATION = text(
    "INSERT INTO conversations (id, thread_key, platform, workspace, channel, thread, location,"
    " customer_id, customer_name, summary, summary_through, facts, failed_drafts, created_at,"
    " updated_at, verified_customer_id, verified_via, verify_attempts, asker_email)"
    " VALUES (:id, :key, :platform, :workspace, :channel, :thread, '', 'U1', '', '', 0, '{}', 0, :now, :now,"
    " '', '', 0, '')"
)


async def test_an_upgrade_to_0010_knows_each_conversations_place_and_an_older_writer_still_inserts(
    old_engine: AsyncEngine,
) -> None:
    engine = old_engine
    await upgrade_database(engine, "0009")
    now = datetime.now(UTC)
    older = {  # as 0009 wrote them: a Slack channel thread, a Slack DM, a Discord DM, a Discord thread
        "slack-channel": ("slack", "T1", "C1", "1.0"),
        "slack-dm": ("slack", "T1", "D1", "-"),
        "discord-dm": ("discord", "@me", "55", "55"),
        "discord-thread": ("discord", "G1", "66", "77"),
    }
    async with engine.begin() as conn:
        for id_, (platform, workspace, channel, thread) in older.items():
            values = dict(platform=platform, workspace=workspace, channel=channel, thread=thread, now=now)
            await conn.execute(OLDER_CONVERSATION, {"id": id_, "key": id_, **values})

    await upgrade_database(engine)

    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == [], "the upgraded database is the models' schema"
    async with engine.begin() as conn:  # an older instance still running writes no place
        values = dict(platform="slack", workspace="T1", channel="C2", thread="2.0", now=now)
        await conn.execute(OLDER_CONVERSATION, {"id": "written-by-0009", "key": "written-by-0009", **values})
    async with sessionmaker(engine)() as session:
        places = {id_: place for id_, place in await session.execute(select(Conversation.id, Conversation.place))}
    assert places == {
        "slack-channel": Place.PUBLIC,
        "slack-dm": Place.PRIVATE,
        "discord-dm": Place.PRIVATE,
        "discord-thread": Place.PUBLIC,
        "written-by-0009": Place.PUBLIC,  # the safe side, until this version sees its next message
    }
    with pytest.raises(IntegrityError, match="ck_conversations_place"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE conversations SET place = 'secret'"))


async def test_an_upgrade_to_0012_takes_direct_replies_and_an_older_writer_still_queues_its_replies(
    old_engine: AsyncEngine,
) -> None:
    engine = old_engine
    ids = await _database_at_0005_with_work_in_flight(engine)
    await upgrade_database(engine, "0011")
    await upgrade_database(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == [], "the upgraded database is the models' schema"
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        # An older instance still running approves a reply and queues it as it always did (kind
        # by the server default); this version sends the waiting one by direct message, and
        # queues its line in the thread.
        await conn.execute(text(OLD_OUTBOX_INSERT), {"draft": ids["waiting"], "now": now})
        key = f"dm-notice-{ids['waiting']}"
        line = "I've sent you the details in a direct message."
        queued = [
            await outbox_rows.enqueue_text(
                conn, OutboxKind.DM_NOTICE, ids["conversation"], "slack:T1:C1:1.0", key, line, now
            )
            for _ in range(2)
        ]
        await conn.execute(text("UPDATE outbox SET kind = 'direct_reply' WHERE draft_id = :d"), {"d": ids["approved"]})
    assert queued == [True, False], "the thread's line is queued once per key"
    async with engine.connect() as conn:
        rows = (await conn.execute(select(OutboxItem.kind, OutboxItem.draft_id).order_by(OutboxItem.id))).all()
    assert [tuple(r) for r in rows] == [
        (OutboxKind.DIRECT_REPLY, ids["approved"]),
        (OutboxKind.REPLY, ids["waiting"]),
        (OutboxKind.DM_NOTICE, None),
    ]
    with pytest.raises(IntegrityError, match="ck_outbox_kind"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE outbox SET kind = 'memo'"))


def test_secrets_come_from_a_secrets_directory(tmp_path: Path, monkeypatch: Any) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "moonshot_api_key").write_text("sk-from-a-file")
    monkeypatch.setenv("SUPPORTBOT_SECRETS_DIR", str(secrets))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.moonshot_api_key is not None
    assert settings.moonshot_api_key.get_secret_value() == "sk-from-a-file"
    assert "sk-from-a-file" not in repr(settings)


async def test_an_event_the_bot_does_not_handle_is_a_200_and_ignored(harness: Harness) -> None:
    from tests.fakes.slack_payloads import event_body, sign

    envelope = {
        "type": "event_callback",
        "team_id": "T111",
        "event_id": "Ev0REACTION",
        "event": {"type": "reaction_added", "user": "U222", "reaction": "tada", "item": {}},
    }
    body = event_body(envelope)
    response = await harness.sender.raw(
        body, sign(body, "canary-signing-secret-abcdef123456", content_type="application/json")
    )
    assert response.status_code == 200, "a 404 would have Slack send it again"
    await harness.settle()
    assert not harness.cards()


async def test_metrics_count_what_happened(harness: Harness) -> None:
    await harness.mention("where is #W2611340")
    await harness.wait_cards(1)
    await harness.settle()
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{harness.url}/metrics")).text
    assert "supportbot_cards_posted_total 1" in metrics
    assert "supportbot_events_received_total 1" in metrics
