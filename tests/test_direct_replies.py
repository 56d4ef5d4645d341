"""Issue 20, point 3, the policy's third choice: ``[identity] public_places = "dm"``. In a public
place the model may use a verified customer's order details; the card says the reply goes by
direct message, and on Approve it does, with the policy's fixed line in the public thread, each
exactly once. A customer who accepts no direct message gets nothing anywhere (never the public
thread as a fallback), and the card says so. On the test desk (SQLite and PostgreSQL), then
through the real Slack and Discord adapters over their fakes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.domain.states import DraftStatus
from bot.events import Place
from bot.public_places import BY_DM
from bot.testing import TestDesk
from tests.desks import FakeKimi, Reply
from tests.test_guards import POLICY
from tests.test_identity_edge import tool_results_of
from tests.test_public_places import KIM, KIM_DETAILS, LOOK_UP, TELLS_ALL, kims_shop

LINE = "I've sent you the details in a direct message."
BY_DIRECT_MESSAGE = POLICY + '\n[identity]\npublic_places = "dm"\n'


@contextlib.asynccontextmanager
async def dm_shop(tmp_path: Path, kimi: FakeKimi, **options: Any) -> AsyncIterator[TestDesk]:
    async with kims_shop(tmp_path, kimi, BY_DIRECT_MESSAGE, **options) as desk:
        yield desk


async def test_a_public_reply_with_verified_details_goes_by_direct_message_and_the_thread_gets_one_line(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with dm_shop(tmp_path, kimi, database_url=database_url) as desk:
        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        said = await desk.customer(KIM).says("where is my order #W2611340?")
        card = await desk.card_for(said)
        assert all(d in tool_results_of(kimi, 0) for d in KIM_DETAILS), "the model may use the details"
        assert card.draft_text == TELLS_ALL, "nothing is cut: the reply is not going to the thread"
        assert card.notice.startswith(BY_DM) and LINE in card.notice, "the card tells where the reply goes"

        told = await desk.agent("mgr").approve(card)
        assert "by direct message" in told
        assert await desk.reply_to(said) == LINE, "the public thread gets the policy's line"
        await desk.settle()
        assert desk.direct_messages(KIM) == [TELLS_ALL], "the reply, once, in Kim's direct messages"
        assert desk.replies_to(said) == [LINE], "once, and nothing else in public"

        # In a direct message already, the reply simply goes there (no line anywhere).
        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        dm = await desk.customer(KIM).says("and my order #W2611340?", place=Place.PRIVATE)
        private = await desk.card_for(dm)
        assert BY_DM not in private.notice
        await desk.agent("mgr").approve(private)
        assert await desk.reply_to(dm) == TELLS_ALL


async def test_a_customer_who_accepts_no_direct_message_gets_nothing_in_public_and_the_card_says_so(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with dm_shop(tmp_path, kimi, database_url=database_url) as desk:
        desk.board.closed_dms.add(desk.customer(KIM).user_id)
        kimi.script(LOOK_UP, Reply(TELLS_ALL))
        said = await desk.customer(KIM).says("where is my order #W2611340?")
        card = await desk.card_for(said)
        await desk.agent("mgr").approve(card)
        failed = await desk.latest(card, lambda c: c.state is DraftStatus.SEND_FAILED)
        assert "the customer accepts no direct message" in failed.notice
        assert "not posted in the public thread either" in failed.notice
        await desk.settle()
        assert desk.replies_to(said) == [] and desk.direct_messages(KIM) == [], "never a public fallback"
