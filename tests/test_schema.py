"""The migrations are the schema: a fresh database upgraded with Alembic matches the models,
and settings come from the places an operator puts them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bot.settings import load_settings
from bot.store import ALL_METADATA, create_engine, upgrade_database
from tests.harness import Harness


async def test_the_migrations_create_exactly_the_models_schema(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    await upgrade_database(engine)
    await upgrade_database(engine)  # idempotent

    def diff(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, list(ALL_METADATA)))  # type: ignore[arg-type]

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await engine.dispose()
    assert [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")] == []


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
