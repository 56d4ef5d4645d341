"""The copilot core, one room per job: intake (the ack), drafting, review decisions, card
publishing, dispatch of approved replies, recovery of work whose worker died, and the supervisor
that owns every background task. :class:`bot.core.copilot.Copilot` wires them."""
