"""How the core meets Kimi's account-level failures, on the test desk: a used-up quota fails
drafts visibly and alerts the agents once, not once per draft."""

from __future__ import annotations

from pathlib import Path

from bot.ports import CardState
from bot.testing import until
from tests.desks import Fail, FakeKimi, open_desk


async def test_a_used_up_quota_fails_each_draft_visibly_and_alerts_the_agents_once(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.script(Fail.quota_exceeded(), Fail.quota_exceeded())
    async with open_desk(tmp_path, kimi) as desk:
        kim = desk.customer("kim")
        first = await desk.card_for(await kim.says("where is #W2611340"))
        second = await desk.card_for(await kim.says("and where is 40021?"))
        await desk.settle()
        for card in (first, second):
            assert card.state is CardState.FAILED and "quota for this account is used up" in card.failure
        [notice] = await until(lambda: desk.notices, "a notice to the agents")
        assert "quota" in notice
