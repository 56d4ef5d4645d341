"""What a customer opening a conversation is told at once, before any human answers: the
policy's ``[desk] acknowledgement`` while the desk is open (``{expected_minutes}`` filled in with
when the first response is due, in business time), ``[desk.hours] out_of_hours`` while it is
closed. Fixed texts the managers wrote, never the model's; sent once, by the instance whose
intake opened the conversation (a crash before the post loses that one greeting)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from bot import metrics
from bot.domain.business_time import business_deadline, is_open
from bot.events import ThreadRef
from bot.policy import DeskSection, PolicyStore
from bot.ports import CustomerChannel
from bot.store import utcnow

log = logging.getLogger(__name__)


def greeting(desk: DeskSection, now: datetime) -> str:
    """The text for a conversation opened at ``now`` ("": say nothing)."""
    hours = desk.hours.business_hours() if desk.hours is not None else None
    if desk.hours is not None and desk.hours.out_of_hours and not is_open(hours, now):
        return desk.hours.out_of_hours
    if not desk.acknowledgement:
        return ""
    due = business_deadline(hours, now, timedelta(minutes=desk.first_response_minutes))
    return desk.acknowledgement.format(expected_minutes=math.ceil((due - now) / timedelta(minutes=1)))


class Greeter:
    """Posts the greeting in the customer's thread."""

    def __init__(self, policy: PolicyStore, channels: Mapping[str, CustomerChannel]) -> None:
        self.policy = policy
        self.channels = channels

    async def greet(self, thread: ThreadRef, conversation_id: str) -> None:
        text = greeting(self.policy.current.desk, utcnow())
        channel = self.channels.get(thread.platform)
        if not text or channel is None:
            return
        try:
            await channel.post_reply(thread, text, idempotency_key=f"greeting-{conversation_id}")
        except Exception:
            log.exception("the greeting of conversation %s could not be posted", conversation_id)
            metrics.platform_error(thread.platform, "post_reply")
