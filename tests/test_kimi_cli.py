"""``supportbot costs`` and ``supportbot models``, run as the operator runs them (a subprocess)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.store import UsageRecord, create_engine, sessionmaker, upgrade_database
from tests.fakes.kimi import FakeKimi
from tests.harness import KIMI_KEY


async def supportbot(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        env={**os.environ, "SUPPORTBOT_SECRETS_DIR": "/nonexistent", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_costs_are_totalled_by_day_and_model_with_the_cache_hit_share(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    engine = create_engine(url)
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    try:
        await upgrade_database(engine)
        async with sessionmaker(engine).begin() as session:
            for when, model, prompt, cached, cost in [
                (yesterday, "kimi-k2.5", 1000, 900, 200),
                (today, "kimi-k2.5", 2000, 1000, 700),
                (today, "kimi-k2.5", 2000, 1000, 700),
                (today, "kimi-k2-0905-preview", 1000, 0, 660),
            ]:
                session.add(
                    UsageRecord(
                        conversation_id="c1",
                        purpose="drafting",
                        model=model,
                        prompt_tokens=prompt,
                        completion_tokens=10,
                        cached_tokens=cached,
                        cost_microusd=cost,
                        created_at=when,
                    )
                )
    finally:
        await engine.dispose()
    code, out, err = await supportbot("costs", env={"DATABASE_URL": url})
    assert code == 0, err
    lines = out.splitlines()
    mine = [line for line in lines if line.startswith(f"{today:%Y-%m-%d}  kimi-k2.5 ")]
    assert len(mine) == 1 and "50.0%" in mine[0] and " 2 " in mine[0] and "0.0014" in mine[0]
    assert any(line.startswith(f"{yesterday:%Y-%m-%d}  kimi-k2.5 ") and "90.0%" in line for line in lines)
    assert lines[-1].startswith("total") and "0.0023" in lines[-1]


async def test_models_lists_what_the_key_can_use_with_context_and_image_support(kimi: FakeKimi) -> None:
    code, out, err = await supportbot("models", env={"MOONSHOT_API_KEY": KIMI_KEY, "KIMI_BASE_URL": kimi.base_url})
    assert code == 0, err
    k25 = next(line for line in out.splitlines() if line.startswith("kimi-k2.5 "))
    assert "262,144" in k25 and "yes" in k25
    v1 = next(line for line in out.splitlines() if line.startswith("moonshot-v1-8k "))
    assert "8,192" in v1 and "yes" not in v1
    code, _, err = await supportbot("models", env={"MOONSHOT_API_KEY": "sk-wrong", "KIMI_BASE_URL": kimi.base_url})
    assert code == 3 and "MOONSHOT_API_KEY was refused" in err  # a configuration error
