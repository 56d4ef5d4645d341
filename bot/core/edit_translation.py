"""An agent's edit translated into the customer's language, after the click.

A translation is a model call, and a click has a few seconds before its ack (Slack's 3 s, a
Discord interaction's). So the click's transaction only *holds* the edit (a ``pending_edits`` row,
with a note on the card: "translating…") and answers at once; this room then makes the call and,
in one transaction, puts the translation on the card for approval (or, when it failed, says so on
the card: nothing was sent) and lets go of the row. The row outlives a crash: the instance
translating it renews its lease (the work lease, as a draft's), and the sweeper hands an edit
whose lease ran out to whichever instance looks next, so an acknowledged edit is translated
seconds after the bot is back. A newer edit of the same draft replaces the one waiting; a draft
decided meanwhile (another agent approved it) keeps its decision and the edit is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.exc import DatabaseError

from bot.core.timing import WorkTiming
from bot.core.translation import Translator
from bot.domain.outcome import AuditLine
from bot.domain.states import DraftStatus
from bot.policy import PolicyStore
from bot.store import Database, pending_edits, records, utcnow
from bot.store import drafts as draft_rows
from bot.store.pending_edits import HeldEdit
from bot.store.reviews import load_for_review

log = logging.getLogger(__name__)


def translating_notice(edit: HeldEdit) -> str:
    """The card's note while the edit is translated."""
    return f"Edited by {edit.actor_name or edit.actor_id}; translating the edit into {edit.language}…"


class EditTranslations:
    """Translates held edits and puts each outcome on its card."""

    def __init__(
        self,
        db: Database,
        policy: PolicyStore,
        translator: Translator,
        timing: WorkTiming,
        refresh_card: Callable[[str], None],
    ) -> None:
        self.db = db
        self.policy = policy
        self.translator = translator
        self.timing = timing
        self.refresh_card = refresh_card

    async def translate(self, edit: HeldEdit) -> None:
        """One held edit: the model call (its lease renewed meanwhile), then its outcome on the
        card (once)."""
        renewing = asyncio.create_task(self._renew(edit), name=f"renew-edit-{edit.draft_id}")
        try:
            back = await self.translator.translate_edit(edit.draft_id, edit.edit, edit.language, self.policy.current)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        who = edit.actor_name or edit.actor_id
        now = utcnow()
        async with self.db.write() as conn:
            draft = await load_for_review(conn, edit.draft_id)  # its conversation first, as a click
            if not await pending_edits.finish(conn, edit):
                return  # replaced by a newer edit, or finished elsewhere
            if draft is None or draft.status is not DraftStatus.AWAITING_REVIEW:
                return  # decided meanwhile: that decision stands
            if back is not None:
                notice = f"Edited by {who} and machine-translated into {back.language}: the reply is the translation."
                kind = "edit_translated"
                await draft_rows.revise_under_review(conn, edit.draft_id, now, edited_text=back.text, notice=notice)
            else:
                notice = f"The edit by {who} could not be translated into {edit.language}: nothing was sent."
                kind = "edit_untranslated"
                await draft_rows.revise_under_review(conn, edit.draft_id, now, notice=notice)
            line = AuditLine(draft.conversation_id, draft.id, kind, edit.actor_id, edit.edit[:200])
            await records.add_audit(conn, [line], now)
        self.refresh_card(edit.draft_id)

    async def resume(self, limit: int = 20) -> int:
        """Translate the held edits nobody live is translating (their instance died); how many."""
        async with self.db.write() as conn:
            due = await pending_edits.take_due(conn, utcnow(), self.timing.lease, limit)
        for edit in due:
            log.info("translating the edit of draft %s held by an earlier run", edit.draft_id)
            await self.translate(edit)
        return len(due)

    async def _renew(self, edit: HeldEdit) -> None:
        """Keep ``edit`` this instance's while its translation runs (a failed renewal is retried
        at the next beat; the worst case is a second instance translating it too, and only one
        outcome is written)."""
        while True:
            await asyncio.sleep(self.timing.renew_every)
            try:
                async with self.db.write() as conn:
                    await pending_edits.renew(conn, edit, utcnow() + self.timing.lease)
            except DatabaseError as exc:
                log.warning("could not renew the lease of the edit of draft %s: %s", edit.draft_id, exc)
