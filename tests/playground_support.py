"""Helpers for the playground tests: the real bot with no chat platform (so the playground
opens by itself), and a headless Debian chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator

from bot.app import Supportbot
from tests.fakes.kimi import FakeKimi
from tests.harness import settings_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEADER = {"X-Playground": "1"}


@contextlib.asynccontextmanager
async def playground_bot(
    tmp_path: Path, kimi: FakeKimi, policy: str | None = None, **overrides: Any
) -> AsyncIterator[Supportbot]:
    """``supportbot run`` with only the Kimi key (and the fake's URL): the playground serves."""
    if policy is not None:
        (tmp_path / "policy.toml").write_text(policy)
    bot = Supportbot(settings_for(tmp_path, kimi, None, **overrides))
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


def need_chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.skip("no chromium: apt-get install chromium (.ci/run installs it)")
    return path


async def take_picture(locator: Locator, shots: Path, name: str, copy_to_variable: str) -> Path:
    """A PNG of ``locator`` in ``shots``, copied into the directory the environment variable
    ``copy_to_variable`` names (e.g. ``docs``) when it is set: how the README's pictures refresh."""
    shot = shots / name
    await locator.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(copy_to_variable):
        shutil.copy(shot, Path(os.environ[copy_to_variable]) / name)
    return shot
