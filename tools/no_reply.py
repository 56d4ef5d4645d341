"""``no_reply_needed``: the model says the customer's message needs no answer ("thanks!").

The tool only records the model's judgement; the core decides (a question, an order id or an
escalation word always gets a draft, whatever the model says).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from tools._args import ARGS_CONFIG
from tools.base import Tool, ToolContext, ToolResult

__all__ = ["NoReplyNeeded"]


class NoReplyArgs(BaseModel):
    """Arguments of ``no_reply_needed``."""

    model_config = ARGS_CONFIG

    reason: Annotated[str, Field(min_length=1, max_length=200, description="Why no reply is needed, in a few words")]


class NoReplyNeeded(Tool):
    """The customer only thanks, acknowledges or withdraws: no card for the agents."""

    name = "no_reply_needed"
    description = (
        "Call this ONLY when the customer's newest message needs no answer at all (a thank-you, "
        "'ok', an emoji, 'never mind') and asks nothing. Then end with an empty reply. Never for "
        "a question, an order, a complaint or a request."
    )
    Args = NoReplyArgs

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        if not isinstance(args, NoReplyArgs):
            raise TypeError(f"expected NoReplyArgs, got {type(args).__name__}")
        return ToolResult(
            {"recorded": True, "note": "No reply will be sent unless the message needs one; end with an empty reply."},
            f"no reply needed: {args.reason}",
        )
