"""Knowledge through Kimi's files API: uploaded once, cached in SQL by content hash, re-uploaded
when changed, deleted when removed, and only the relevant passages reach the prompt."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from bot.kimi import KimiClient
from bot.llm.knowledge import KnowledgeSync
from bot.store import create_engine, upgrade_database
from tests.fakes.kimi import CallTools, FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, card_text, running_bot

RETURNS = "# Returns\n\nUnused items can be returned within 30 days for a full refund.\n"
SHIPPING = "# Shipping\n\nWe ship worldwide with UPS; parcels leave within two business days.\n"


def uploads(kimi: FakeKimi) -> list[str]:
    return [r.path for r in kimi.requests if r.method == "POST" and r.path == "/v1/files"]


async def test_files_are_uploaded_once_changed_ones_again_and_removed_ones_deleted(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    returns, shipping = tmp_path / "returns.md", tmp_path / "shipping.md"
    returns.write_text(RETURNS)
    shipping.write_text(SHIPPING)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    client = KimiClient(kimi.base_url, SecretStr(KIMI_KEY))
    try:
        await upgrade_database(engine)
        first = await KnowledgeSync(engine, client).sync([returns, shipping])
        assert first.uploaded == ["returns.md", "shipping.md"] and len(kimi.files) == 2

        # A restart: the SQL cache knows both contents, nothing is uploaded again.
        restarted = KnowledgeSync(engine, client)
        again = await restarted.sync([returns, shipping])
        assert again.unchanged == ["returns.md", "shipping.md"] and len(uploads(kimi)) == 2
        [hit] = restarted.base.search("refund unused items", limit=1)
        assert hit.source == "returns.md" and "30 days" in hit.text

        # The returns policy changes and the shipping file is dropped from the policy.
        old_ids = set(kimi.files)
        returns.write_text(RETURNS.replace("30 days", "60 days"))
        changed = await restarted.sync([returns])
        assert changed.uploaded == ["returns.md"]
        assert sorted(changed.deleted) == ["returns.md", "shipping.md"], "both old uploads are gone"
        assert len(kimi.files) == 1 and not (set(kimi.files) & old_ids)
        [hit] = restarted.base.search("refund unused items", limit=1)
        assert "60 days" in hit.text
        assert restarted.base.search("worldwide UPS") == []
    finally:
        await client.aclose()
        await engine.dispose()


async def test_a_knowledge_file_changed_while_running_reaches_the_next_draft(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    (tmp_path / "returns.md").write_text(RETURNS)
    policy = '[knowledge]\nfiles = ["returns.md"]\n'
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        assert len(uploads(kimi)) == 1, "uploaded at start-up"
        (tmp_path / "returns.md").write_text(RETURNS.replace("30 days", "90 days"))
        for _ in range(200):  # the watcher re-syncs within POLICY_RELOAD_SECONDS
            if len(uploads(kimi)) == 2 and len(kimi.files) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(uploads(kimi)) == 2 and len(kimi.files) == 1
        kimi.script(CallTools([("search_knowledge", {"query": "return unused items refund"})]))
        await harness.mention("can I return an unused mug?")
        [card] = await harness.wait_cards(1)
        tool_result = next(m for m in kimi.completions[-1]["messages"] if m["role"] == "tool")
        assert "within 90 days" in tool_result["content"] and "30 days" not in tool_result["content"]
        assert "`search_knowledge`" in card_text(card)
        system = kimi.completions[0]["messages"][0]["content"]
        assert "90 days" not in system, "knowledge comes as retrieved passages, not in the stable prefix"


async def test_knowledge_sync_and_search_from_the_command_line(tmp_path: Path, kimi: FakeKimi) -> None:
    (tmp_path / "returns.md").write_text(RETURNS)
    (tmp_path / "shipping.md").write_text(SHIPPING)
    (tmp_path / "policy.toml").write_text('[knowledge]\nfiles = ["returns.md", "shipping.md"]\n')
    env = {
        **os.environ,
        "SUPPORTBOT_SECRETS_DIR": "/nonexistent",
        "MOONSHOT_API_KEY": KIMI_KEY,
        "KIMI_BASE_URL": kimi.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        "POLICY_FILE": str(tmp_path / "policy.toml"),
    }

    async def supportbot(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", *args, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0
        return out.decode()

    assert "uploaded: returns.md, shipping.md" in await supportbot("knowledge", "sync")
    assert "unchanged: returns.md, shipping.md" in await supportbot("knowledge", "sync")
    found = await supportbot("knowledge", "search", "ship worldwide")
    assert "shipping.md" in found and "UPS" in found and "returns.md" not in found
    assert len(uploads(kimi)) == 2
