"""An agent's home on the desk (Slack's App Home): the queue of cards waiting, oldest first, each
with its age against ``[desk] first_response_minutes`` (in business time when ``[desk.hours]``
is set), the open conversations assigned to the agent, and the day's figures since midnight in
the desk's timezone. The adapter renders it; what it holds is decided here."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.business_time import business_elapsed
from bot.domain.roles import is_agent
from bot.events import Author
from bot.policy import PolicyStore
from bot.ports import DeskHome, MyConversation, QueueItem, SlaState
from bot.store import Database, utcnow
from bot.store import home as home_rows

#: How long after opening their home an agent's view is kept fresh.
VIEWER_TTL = timedelta(hours=1)
#: Cards and conversations shown at most (a Home view holds 100 blocks).
QUEUE_SHOWN = 15
MINE_SHOWN = 10
SNIPPET = 140


def sla_state(waited: timedelta, sla_minutes: float) -> SlaState:
    """Where a card that waited ``waited`` stands against the first-response time."""
    if sla_minutes <= 0:
        return SlaState.NONE
    sla = timedelta(minutes=sla_minutes)
    if waited >= sla * 2:
        return SlaState.OVERDUE
    return SlaState.DUE if waited >= sla else SlaState.WITHIN


def snippet(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SNIPPET else line[: SNIPPET - 1] + "…"


class Homes:
    """Reads what an agent's home shows, and remembers who looks at it (for every instance)."""

    def __init__(self, db: Database, policy: PolicyStore) -> None:
        self.db = db
        self.policy = policy

    async def home(self, viewer: Author, now: datetime | None = None) -> DeskHome | None:
        """``viewer``'s home, or None when the policy does not count them as an agent."""
        policy = self.policy.current
        if viewer.is_bot or not is_agent(viewer, policy):
            return None
        now = now or utcnow()
        desk = policy.desk
        hours = desk.hours.business_hours() if desk.hours is not None else None
        zone = ZoneInfo(desk.hours.timezone) if desk.hours is not None else ZoneInfo("UTC")
        midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        async with self.db.read() as conn:
            waiting, total = await home_rows.waiting(conn, QUEUE_SHOWN)
            mine = await home_rows.assigned_to(conn, viewer.id, MINE_SHOWN)
            today = await home_rows.figures_since(conn, midnight)
        queue = []
        for row in waiting:
            waited = business_elapsed(hours, row.created_at, now)
            queue.append(
                QueueItem(
                    row.draft_id,
                    row.location,
                    row.customer,
                    snippet(row.text),
                    waited,
                    sla_state(waited, desk.first_response_minutes),
                    row.assignee,
                )
            )
        return DeskHome(
            queue=tuple(queue),
            mine=tuple(MyConversation(r.conversation_id, r.location, r.customer, r.status, r.owner) for r in mine),
            today=today,
            sla_minutes=desk.first_response_minutes,
            more_waiting=max(0, total - len(queue)),
        )

    async def opened(self, desk: str, viewer: Author) -> None:
        """``viewer`` opened their home on ``desk``: an agent's is kept fresh for
        :data:`VIEWER_TTL`; nobody else's is kept (it shows nothing that changes)."""
        if viewer.is_bot or not is_agent(viewer, self.policy.current):
            return
        now = utcnow()
        async with self.db.write() as conn:
            await home_rows.viewer_opened(conn, desk, viewer.id, now, now - VIEWER_TTL)

    async def viewers(self, desk: str) -> list[str]:
        """Who opened their home on ``desk`` within :data:`VIEWER_TTL`, on any instance."""
        async with self.db.read() as conn:
            return await home_rows.viewers_since(conn, desk, utcnow() - VIEWER_TTL)
